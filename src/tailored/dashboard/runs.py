"""The runs page: every served run (jobs' fine-tunes and ``--runs`` folders), its report, and downloads via export.

A run is named by its model id; the registry answers only the models the caller's project may see
(the service's tenancy rule), so another project's run is a 404 on every route here.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from tailored.dashboard.routes import body_of, scope_of
from tailored.errors import NotFound, RequestError

router = APIRouter()
FORMATS = ("adapter", "merged", "gguf")


def _entry(request: Request, model: str) -> Any:
    entry = request.app.state.registry.resolve(model, scope_of(request))
    if entry.run_dir is None:
        raise NotFound(f"{model} is the base model, not a run", param="model", code="not_a_run")
    return entry


@router.get("/ui/api/runs")
def list_runs(request: Request) -> dict[str, Any]:
    out = []
    for e in request.app.state.registry.models(scope_of(request)):
        if e.run_dir is None:
            continue
        m = e.manifest
        out.append({"model": e.id, "kind": e.kind, "which": e.which, "run": e.run_dir.name, "created": e.created,
                    "project": e.project, "method": m.method.name if m else None,
                    "red_flags": (m.red_flags or {}).get("verdict") if m else None, "unsupported": e.unsupported})
    return {"data": out}


@router.get("/ui/runs/report", response_class=HTMLResponse)
async def report(request: Request, model: str) -> HTMLResponse:
    """The run's HTML report (curves, metrics, answers, red flags), as ``tailored report`` writes it."""
    from tailored.eval.report import render_html, saved_evals

    entry = _entry(request, model)
    page = await asyncio.to_thread(lambda: render_html(run_dir=entry.run_dir, evals=saved_evals(entry.run_dir)))
    return HTMLResponse(page, headers={"content-security-policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
                                       "x-frame-options": "SAMEORIGIN", "cache-control": "no-store"})


def _export_dir(entry: Any, fmt: str) -> Path:
    from tailored.models.registry import sanitise, tailored_home

    return tailored_home() / "dashboard" / "exports" / sanitise(entry.id) / fmt


def _archive(folder: Path) -> Path:
    """The file a download sends: a GGUF export's one file, else the folder as a zip beside it."""
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs:
        return ggufs[0]
    target = folder.with_suffix(".zip")
    if not target.is_file() or target.stat().st_mtime < folder.stat().st_mtime:
        tmp = shutil.make_archive(str(folder.with_suffix(".partial")), "zip", folder)
        Path(tmp).replace(target)
    return target


@router.post("/ui/api/runs/export")
async def export(request: Request) -> dict[str, Any]:
    """Export a run (adapter, merged or gguf) with :func:`tailored.export.run.export_run`; returns its download link."""
    from tailored.export.run import export_run

    body = await body_of(request)
    fmt = str(body.get("format") or "")
    if fmt not in FORMATS:
        raise RequestError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}", param="format")
    entry = _entry(request, str(body.get("model") or ""))
    out = _export_dir(entry, fmt)

    def run() -> dict[str, Any]:
        result = export_run(entry.run_dir, out, format=fmt, which=entry.which, force=True)
        file = _archive(out)
        return {"format": fmt, "files": sorted(result.files),
                "warnings": result.warnings, "seconds": round(result.seconds, 1), "bytes": file.stat().st_size,
                "download": f"/ui/runs/download?model={entry.id}&format={fmt}"}

    return await asyncio.to_thread(run)


@router.get("/ui/runs/download")
def download(request: Request, model: str, format: str) -> FileResponse:
    entry = _entry(request, model)
    if format not in FORMATS:
        raise RequestError(f"format {format!r}: expected one of {', '.join(FORMATS)}", param="format")
    out = _export_dir(entry, format)
    if not out.is_dir():
        raise NotFound(f"{model} has no {format} export yet", param="format", code="not_exported",
                       hint="press Export on the runs page first")
    file = _archive(out)
    return FileResponse(file, filename=f"{entry.run_dir.name}-{format}{file.suffix}", media_type="application/octet-stream")
