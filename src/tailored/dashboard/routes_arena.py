"""The arena's routes: a blind battle (two answers, names hidden), the vote, the leaderboard, the DPO export."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tailored.dashboard.arena import Arena, leaderboard, preference_rows
from tailored.dashboard.routes import body_of, jobs_of, scope_of
from tailored.errors import RequestError
from tailored.eval.generate import GenerationSettings

router = APIRouter()
EXPORT_NAME = "arena-preferences.jsonl"


def arena_of(request: Request) -> Arena:
    state = request.app.state
    if getattr(state, "arena", None) is None:
        state.arena = Arena(jobs_of(request).store)
    return state.arena


def answer(engine: Any, entry: Any, messages: list[dict[str, Any]], sampling: GenerationSettings) -> str:
    """One answer from the server's engine (the same path a chat completion takes), waited for here."""
    done, parts, failed = threading.Event(), [], []

    def on_event(kind: str, payload: Any) -> None:
        if kind == "delta":
            parts.append(payload[1])
        elif kind == "error":
            failed.append(payload)
            done.set()
        elif kind == "done":
            done.set()

    req = engine.prepare(entry, messages, sampling, 1, on_event)
    engine.submit(req)
    if not done.wait(600):
        req.cancel()
        raise RequestError("the models took over 10 minutes to answer", code="timeout")
    if failed:
        raise failed[0]
    return "".join(parts)


def distinct_models(entries: list[Any]) -> list[str]:
    """One id per run: the base, and each run's model as it is served by default (its best or final weights).
    A job's checkpoints (``...:ckpt-step-N``, the last one included) share its run folder and are left out, even
    when the last checkpoint's final weights differ from the model's best ones."""
    seen: dict[str, str] = {}
    for e in sorted(entries, key=lambda e: len(e.id)):  # a job's model id is a prefix of its checkpoints' ids
        if not e.unsupported:
            seen.setdefault(str(e.run_dir) if e.run_dir is not None else e.id, e.id)
    return list(seen.values())


def _prompt(request: Request, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The battle's conversation: the typed prompt, or a random example's prompt from a stored file."""
    if str(body.get("prompt") or "").strip():
        return [{"role": "user", "content": str(body["prompt"]).strip()}]
    if not body.get("file_id"):
        raise RequestError("type a prompt or pick a test file", param="prompt")
    from tailored.data.readers import read_records

    files = jobs_of(request).files
    row = files.row(scope_of(request), str(body["file_id"]))
    examples = [e for e in read_records(files.path(row["sha256"])).examples if e.messages]
    if not examples:
        raise RequestError(f"{row['filename']} has no chat examples to take prompts from", param="file_id")
    messages = random.choice(examples).messages
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user") if any(
        m.get("role") == "user" for m in messages) else len(messages) - 1
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages[:last_user + 1]]


@router.post("/ui/api/arena/battles")
async def new_battle(request: Request) -> dict[str, Any]:
    body = await body_of(request)
    registry, engine, caller = request.app.state.registry, request.app.state.engine, request.state.caller
    chosen = [str(m) for m in body.get("models") or [] if m]
    if not chosen:
        chosen = distinct_models(registry.models(caller.scope))
    if len(set(chosen)) < 2:
        raise RequestError("the arena needs two models; this project sees only one", param="models",
                           hint="fine-tune a model first (jobs page), or start the server with --runs")
    pair = random.sample(sorted(set(chosen)), 2)  # random left/right order
    entries = [await asyncio.to_thread(registry.resolve, m, caller.scope) for m in pair]
    messages = await asyncio.to_thread(_prompt, request, body)
    sampling = GenerationSettings(max_new_tokens=int(body.get("max_tokens") or 128),
                                  temperature=float(body.get("temperature") if body.get("temperature") is not None else 0.7),
                                  seed=body.get("seed"))
    answers = await asyncio.gather(*(asyncio.to_thread(answer, engine, e, messages, sampling) for e in entries))
    battle_id = arena_of(request).add(caller.project, messages, (entries[0].id, entries[1].id), (answers[0], answers[1]))
    return {"id": battle_id, "messages": messages, "answers": answers}  # no names until the vote


@router.post("/ui/api/arena/battles/{battle_id}/vote")
async def vote(request: Request, battle_id: str) -> dict[str, Any]:
    body = await body_of(request)
    return arena_of(request).vote(scope_of(request), battle_id, str(body.get("vote") or ""))


@router.get("/ui/api/arena/leaderboard")
def board(request: Request) -> dict[str, Any]:
    return leaderboard(arena_of(request).voted(scope_of(request)))


def _jsonl(request: Request) -> tuple[bytes, int, dict[str, int]]:
    rows, left_out = preference_rows(arena_of(request).voted(scope_of(request)))
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"), len(rows), left_out


@router.get("/ui/api/arena/preferences.jsonl")
def export_download(request: Request) -> Response:
    """The decisive votes as a preference file (OpenAI's DPO format), downloaded."""
    data, _, _ = _jsonl(request)
    return Response(data, media_type="application/jsonl",
                    headers={"content-disposition": f'attachment; filename="{EXPORT_NAME}"'})


@router.post("/ui/api/arena/preferences")
async def export_file(request: Request) -> dict[str, Any]:
    """The same file stored as a ``fine-tune`` file of the project, ready for a ``dpo`` job."""
    data, n, left_out = _jsonl(request)
    if not n:
        skipped = sum(left_out.values())
        why = (f"the {skipped} decisive vote(s) all had identical or empty answers" if skipped
               else "no decisive votes yet (A or B)")
        raise RequestError(f"{why}: nothing to export", code="no_votes")
    files = jobs_of(request).files
    file = await asyncio.to_thread(files.add, request.state.caller.project, EXPORT_NAME, "fine-tune", data)
    return {"file": file, "pairs": n, "left_out_identical": left_out["identical"], "left_out_empty": left_out["empty"]}
