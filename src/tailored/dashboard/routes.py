"""The dashboard's page and its JSON routes for data and jobs (``/ui/api``); each handler calls one library function.

Everything else the pages need is the service's own API under ``/v1`` (files, jobs, events,
models, chat), which the browser calls with its session cookie.
"""

from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tailored.dashboard.session import asset, cookie_of, set_cookie
from tailored.errors import RequestError

router = APIRouter()
PREVIEW_EXAMPLES = 5


def scope_of(request: Request) -> str | None:
    return request.state.caller.scope


def jobs_of(request: Request) -> Any:
    jobs = request.app.state.jobs
    if jobs is None:
        raise RequestError("this server runs without the jobs service (--no-jobs): no data, jobs or runs pages",
                           code="jobs_disabled", hint="start `tailored serve` without --no-jobs")
    return jobs


def tokenizer_of(request: Request) -> Any:
    """The base model's tokenizer (loaded once): the one training uses, so masks and counts are the real ones."""
    state = request.app.state
    if getattr(state, "dashboard_tokenizer", None) is None:
        from tailored.models.load import load_tokenizer

        state.dashboard_tokenizer = load_tokenizer(state.registry.base_folder)
    return state.dashboard_tokenizer


async def body_of(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", code="invalid_json")
    return body


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> Any:
    """The single page; a keyless server opens a session here (for its CSRF token)."""
    sessions = request.app.state.sessions
    sid = cookie_of({"cookie": request.headers.get("cookie", "")})
    session = sessions.get(sid)
    cookie = None
    if session is None and request.app.state.keys.required:  # a bearer client: the page is for browsers
        return RedirectResponse("/ui/login", status_code=303)
    if session is None:  # a keyless server: a session for the CSRF token, no login
        sid, session = sessions.open("")
        cookie = set_cookie(sid, secure=request.url.scheme == "https")
    caller = request.state.caller
    page = asset("index.html").decode().replace("{{csrf}}", html.escape(session.csrf)).replace(
        "{{project}}", html.escape(caller.project + (" (admin)" if caller.admin else ""))).replace(
        "{{keyed}}", "1" if request.app.state.keys.required else "0").replace(
        "{{traffic}}", "1" if getattr(request.app.state, "traffic", None) is not None else "0")
    response = HTMLResponse(page, headers={"cache-control": "no-store", "x-frame-options": "DENY",
                                           "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                                                                      "style-src 'self'; frame-src 'self'"})
    if cookie:
        response.headers["set-cookie"] = cookie
    return response


# ---- data ----------------------------------------------------------------------------------
@router.get("/ui/api/files/{file_id}/inspect")
async def inspect_file(request: Request, file_id: str) -> dict[str, Any]:
    """A stored file's validation report (problems by line), statistics and the trained-token preview."""
    from tailored.dashboard.inspect import inspect

    files = jobs_of(request).files
    row = files.row(scope_of(request), file_id)
    tokenizer = await asyncio.to_thread(tokenizer_of, request)
    return await asyncio.to_thread(inspect, files.path(row["sha256"]), row, tokenizer, PREVIEW_EXAMPLES)


# ---- jobs ----------------------------------------------------------------------------------
@router.post("/ui/api/estimate")
async def estimate_job(request: Request) -> dict[str, Any]:
    """What a job would take (tokens, memory, time), from the same settings the job form sends."""
    from tailored.dashboard.inspect import estimate_for

    body = await body_of(request)
    jobs = jobs_of(request)
    row = jobs.files.row(scope_of(request), str(body.get("training_file") or ""))
    return await asyncio.to_thread(estimate_for, jobs, jobs.files.path(row["sha256"]), body)


@router.get("/ui/api/jobs/{job_id}/curve")
def job_curve(request: Request, job_id: str) -> dict[str, Any]:
    """Every logged point of the job's run (train and validation), its checkpoints, the best one, ETA, red flags."""
    from tailored.dashboard.inspect import curve

    jobs = jobs_of(request)
    job = jobs.get(scope_of(request), job_id)
    return curve(jobs.folder(job_id) / "run", jobs.store.checkpoints(job_id), job)


@router.get("/ui/api/methods")
def methods(request: Request) -> dict[str, Any]:
    """The registered methods and the data each trains on (for the job form)."""
    from tailored.methods import method_options
    from tailored.methods.base import get_method

    return {"methods": [{"name": name, "trains_on": get_method(name).trains_on} for name in sorted(method_options())]}


def run_folder_of(request: Request, job_id: str) -> Path:
    jobs = jobs_of(request)
    jobs.get(scope_of(request), job_id)  # tenancy: another project's job is a 404
    return jobs.folder(job_id) / "run"
