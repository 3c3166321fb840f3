"""``/v1/traffic`` (the logged requests and their feedback) and ``/v1/drift`` (a model's drift checks over time).

Every route runs as the caller's project: a project sees, rates and checks only its own traffic and
models (an admin sees all); another project's ids answer 404. ``/v1/drift?model=ID`` is the JSON a
dashboard plots: one point per ``tailored drift`` check of the model's run, with its verdict.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request

from tailored.errors import RequestError
from tailored.serve.traffic import parse_since

router = APIRouter()
RATINGS = ("good", "bad")


def _log(request: Request) -> Any:
    log = request.app.state.traffic
    if log is None:
        raise RequestError("this server does not log traffic", code="traffic_logging_off",
                           hint="start it with `tailored serve --log-requests`")
    return log


@router.get("/traffic")
def list_traffic(request: Request, model: str | None = None, since: str | None = None, limit: int = 100) -> dict[str, Any]:
    rows = _log(request).rows(request.state.caller.scope, model=model, since=parse_since(since))
    data = rows[-max(1, min(limit, 10000)):]
    return {"object": "list", "data": data, "has_more": len(rows) > len(data)}


@router.get("/traffic/{traffic_id}")
def get_traffic(request: Request, traffic_id: str) -> dict[str, Any]:
    return _log(request).row(request.state.caller.scope, traffic_id)


@router.post("/traffic/{traffic_id}/feedback")
async def feedback(request: Request, traffic_id: str) -> dict[str, Any]:
    """Body ``{"rating": "good" | "bad", "correction": "the right answer"}`` (correction optional)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    rating = body.get("rating") if isinstance(body, dict) else None
    if rating not in RATINGS:
        raise RequestError(f"rating: expected 'good' or 'bad', got {rating!r}", param="rating")
    correction = body.get("correction")
    if correction is not None and not isinstance(correction, str):
        raise RequestError("correction: expected a string (the right answer)", param="correction")
    return await asyncio.to_thread(_log(request).feedback, request.state.caller.scope, traffic_id, rating, correction)


@router.get("/drift")
def drift_history(request: Request, model: str) -> dict[str, Any]:
    """The drift checks of ``model``'s run, oldest first (``tailored drift RUN`` adds one)."""
    from tailored.drift.run import history

    entry = request.app.state.registry.resolve(model, request.state.caller.scope)
    if entry.run_dir is None:
        raise RequestError(f"{model} is the base model: drift is checked for fine-tunes (their training data)",
                           param="model", code="not_a_fine_tune")
    return {"object": "list", "model": entry.id, "data": history(entry.run_dir)}
