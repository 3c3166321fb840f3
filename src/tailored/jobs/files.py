"""``/v1/files``: uploaded bytes stored content-addressed, fine-tune files checked on upload.

The bytes of a file live once under ``files/<sha256[:2]>/<sha256>``, written atomically, however
many times (or by however many projects) they are uploaded; the rows in the store say who owns
which upload. A ``fine-tune`` file is checked with the same checks as ``tailored data check``: it is
``processed``, or ``error`` with the per-line report in ``status_details``.

A ``fine-tune`` upload that is a table or a labelling export (``.csv``, ``.tsv``, ``.xlsx``, ``.parquet``,
``.arrow``, a Label Studio ``.json`` export, a Prodigy ``.jsonl``) is converted on the server, with the
default columns of :mod:`tailored.data.imports` (prompt: prompt/question/instruction(+input)/input/query/
text; answer: answer/completion/output/label/response; system: system/system_prompt): the file's content
is then the chat JSONL the job trains on, and the uploaded bytes are kept beside it
(``<sha256>.<original sha256[:16]>.source<suffix>``). A file that does not convert is ``error`` with the
per-row report (row numbers and columns) in ``status_details``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tailored.config.files import atomic_write
from tailored.data.check import check_file
from tailored.data.imports import SUFFIXES, ImportOptions, import_layout, using
from tailored.data.readers import example_to_chat
from tailored.errors import NotFound, RequestError, TailoredError
from tailored.jobs.store import Store, new_id, now, page

# What the SDK's FileObject accepts for purpose (``evals`` is accepted by OpenAI on upload, refused in responses).
PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "assistants_output", "batch", "batch_output", "vision",
            "user_data")
UPLOAD_PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data")


def file_object(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": row["status"], "expires_at": None,
            "status_details": row["status_details"]}


class Files:
    """Files of every project, in ``root``."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store, self.root = store, Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.jsonl"

    def upload(self, project: str, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        """Store an upload and check it (for ``fine-tune``); returns the FileObject."""
        if purpose not in UPLOAD_PURPOSES:
            raise RequestError(f"purpose {purpose!r} is not supported; use one of: {', '.join(UPLOAD_PURPOSES)}",
                               param="purpose", code="invalid_purpose")
        return self.add(project, os.path.basename(filename) or "upload", purpose, data)

    def source_path(self, sha256: str, source_sha256: str, suffix: str) -> Path:
        """Where the uploaded bytes of a converted file are kept, beside the chat JSONL they became."""
        return self.root / sha256[:2] / f"{sha256}.{source_sha256[:16]}.source{suffix}"

    def add(self, project: str, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        """Store bytes as a file of ``project`` (also the service's own result files)."""
        status, details, report = "processed", None, None
        converted = _convert(self.root, filename, data) if purpose == "fine-tune" else None
        original = None
        if converted is not None:
            status, details, report, chat = converted
            if chat is not None:
                original, data = data, chat
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if not path.is_file():
            atomic_write(path, data)
        if original is not None and report is not None:
            source = report["source"]
            kept = self.source_path(sha, source["sha256"], Path(filename).suffix.lower())
            if not kept.is_file():
                atomic_write(kept, original)
        if purpose == "fine-tune" and converted is None:
            status, details, report = _check(path, filename)
        row = {"id": new_id("file-", 24), "project": project, "filename": filename, "purpose": purpose,
               "bytes": len(data), "sha256": sha, "created_at": now(), "status": status, "status_details": details,
               "report": json.dumps(report) if report else None}
        self.store.add_file(row)
        return file_object(row)

    def row(self, project: str | None, file_id: str) -> Any:
        """The stored row of ``file_id`` in ``project`` (404 otherwise, also for another project's file)."""
        row = self.store.file(file_id, project)
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return row

    def get(self, project: str | None, file_id: str) -> dict[str, Any]:
        return file_object(self.row(project, file_id))

    def list(self, project: str | None, *, purpose: str | None = None, order: str = "desc", after: str | None = None,
             limit: int = 10000) -> dict[str, Any]:
        if order not in ("asc", "desc"):
            raise RequestError(f"order {order!r}: expected asc or desc", param="order")
        if not 1 <= limit <= 10000:
            raise RequestError(f"limit {limit}: expected 1 to 10000", param="limit")
        rows = [file_object(r) for r in self.store.files(project, purpose=purpose, order=order)]
        return page(rows, after=after, limit=limit)

    def delete(self, project: str | None, file_id: str) -> dict[str, Any]:
        row = self.row(project, file_id)
        self.store.delete_file(file_id)
        if not self.store.file_in_use(row["sha256"]):  # the bytes go with their last upload
            self.path(row["sha256"]).unlink(missing_ok=True)
            for kept in self.path(row["sha256"]).parent.glob(f"{row['sha256']}.*.source*"):
                kept.unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def content(self, project: str | None, file_id: str) -> Path:
        return self.path(self.row(project, file_id)["sha256"])


def _check(path: Path, filename: str) -> tuple[str, str | None, dict[str, Any]]:
    """(status, status_details, report) of a fine-tune upload: the checks of ``tailored data check``."""
    try:
        report = check_file(path, min_examples=1)
    except (TailoredError, UnicodeDecodeError, OSError) as exc:  # unreadable: said, not raised
        message = exc.message if isinstance(exc, TailoredError) else f"{type(exc).__name__}: {exc}"
        return "error", f"{filename}: {message}".replace(str(path), filename), {"problems": []}
    problems = [{"line": p.line, "category": p.category, "message": p.message, "severity": p.severity}
                for p in report.problems]
    summary = {"format": report.format, "lines": report.n_lines, "examples": len(report.examples), "problems": problems}
    if not report.has_errors:
        return "processed", None, summary
    details = report.render(limit=20).replace(str(path), filename)
    return "error", details, summary


def _convert(root: Path, filename: str, data: bytes) -> tuple[str, str | None, dict[str, Any], bytes | None] | None:
    """(status, status_details, report, chat JSONL or None) of a table or labelling export; None for JSONL examples.

    The upload is read from a temporary file named like it (the suffix says the layout), with the
    default columns, by the readers ``tailored data check`` uses.
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in (*SUFFIXES, ".json", ".jsonl"):
        return None
    incoming = root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=suffix, dir=incoming)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with using(ImportOptions()) as reading:
            if import_layout(tmp) is None:
                return None
            try:
                report = check_file(tmp, min_examples=1)
            except (TailoredError, UnicodeDecodeError, OSError) as exc:
                message = exc.message if isinstance(exc, TailoredError) else f"{type(exc).__name__}: {exc}"
                hint = f"\nhint: {exc.hint}" if isinstance(exc, TailoredError) and exc.hint else ""
                return "error", f"{filename}: {message}{hint}".replace(str(tmp), filename), {"problems": []}, None
        layout = reading.layouts[0] if reading.layouts else None
        described = layout.describe().replace(str(tmp), filename) if layout else ""
        problems = [{"line": p.line, "unit": p.unit, "column": p.column, "category": p.category, "message": p.message,
                     "severity": p.severity} for p in report.problems]
        summary: dict[str, Any] = {"format": report.format, "lines": report.n_lines, "examples": len(report.examples),
                                   "problems": problems, "layout": described,
                                   "source": {"filename": filename, "bytes": len(data),
                                              "sha256": hashlib.sha256(data).hexdigest()}}
        if report.has_errors:
            details = (described + "\n" + report.render(limit=20)).replace(str(tmp), filename)
            return "error", details, summary, None
        chat = "".join(json.dumps(example_to_chat(ex), ensure_ascii=False) + "\n" for ex in report.examples)
        return "processed", None, summary, chat.encode("utf-8")
    finally:
        tmp.unlink(missing_ok=True)
