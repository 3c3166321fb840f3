"""``/v1/files`` and ``/v1/fine_tuning/jobs``: OpenAI's fine-tuning flow, each route one call of :mod:`tailored.jobs`.

Every call runs as the caller's project (an admin sees all); the library does the rest.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse

from tailored.errors import RequestError

router = APIRouter()


def _scope(request: Request) -> str | None:
    return request.state.caller.scope


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None


@router.post("/files")
async def create_file(request: Request, file: UploadFile = File(...), purpose: str = Form(...)) -> dict[str, Any]:
    data = await file.read()
    files = request.app.state.jobs.files
    return await asyncio.to_thread(files.upload, request.state.caller.project, file.filename or "upload", purpose, data)


@router.get("/files")
def list_files(request: Request, after: str | None = None, limit: int = 10000, order: str = "desc",
               purpose: str | None = None) -> dict[str, Any]:
    return request.app.state.jobs.files.list(_scope(request), purpose=purpose, order=order, after=after, limit=limit)


@router.get("/files/{file_id}")
def get_file(request: Request, file_id: str) -> dict[str, Any]:
    return request.app.state.jobs.files.get(_scope(request), file_id)


@router.delete("/files/{file_id}")
def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    return request.app.state.jobs.files.delete(_scope(request), file_id)


@router.get("/files/{file_id}/content")
def file_content(request: Request, file_id: str) -> FileResponse:
    files = request.app.state.jobs.files
    row = files.row(_scope(request), file_id)
    return FileResponse(files.path(row["sha256"]), media_type="application/octet-stream", filename=row["filename"])


@router.post("/fine_tuning/jobs")
async def create_job(request: Request) -> dict[str, Any]:
    body = await _json(request)
    return await asyncio.to_thread(request.app.state.jobs.create, request.state.caller.project, body)


@router.get("/fine_tuning/jobs")
def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    params = request.query_params
    metadata = {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[") and k.endswith("]")}
    return request.app.state.jobs.list(_scope(request), after=after, limit=limit, metadata=metadata,
                                       no_metadata=params.get("metadata") == "null")


@router.get("/fine_tuning/jobs/{job_id}")
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return request.app.state.jobs.get(_scope(request), job_id)


@router.post("/fine_tuning/jobs/{job_id}/{action}")
def control_job(request: Request, job_id: str, action: str) -> dict[str, Any]:
    if action not in ("cancel", "pause", "resume"):
        raise RequestError(f"POST /v1/fine_tuning/jobs/{{id}}/{action}: expected cancel, pause or resume",
                           code="unknown_action")
    return getattr(request.app.state.jobs, action)(_scope(request), job_id)


@router.get("/fine_tuning/jobs/{job_id}/events")
def job_events(request: Request, job_id: str, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    return request.app.state.jobs.events(_scope(request), job_id, after=after, limit=limit)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def job_checkpoints(request: Request, job_id: str, after: str | None = None, limit: int = 10) -> dict[str, Any]:
    return request.app.state.jobs.checkpoints(_scope(request), job_id, after=after, limit=limit)
