"""The traffic log (opt-in, ``tailored serve --log-requests``): what each served model was asked and answered.

Nothing is written unless ``log_requests`` is on. Then every chat completion of a logged project
(``log_projects``, empty: all) becomes a row of the ``traffic`` table in the server's SQLite store
(``$TAILORED_HOME/service/jobs.sqlite``, beside the jobs service's tables): the project of the key that
asked, the model id and its run folder, the prompt messages, the answer, latency, token counts and the
finish reason. The id is the completion's own ``id`` (``chatcmpl-...``), which the client already has,
so it can mark the answer good or bad (``POST /v1/traffic/{id}/feedback``). Rows older than
``log_retention_days`` are deleted (when the server starts, then hourly). ``log_redact`` rewrites every text before
it is written: ``pii`` masks e-mail addresses, card and phone numbers; ``module:function`` names a
function ``str -> str`` of your own.

A project sees only its own rows (an admin key sees all); another project's id answers 404.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from tailored.errors import ConfigError, NotFound
from tailored.jobs.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project TEXT NOT NULL, model TEXT NOT NULL,
    run TEXT, created_at REAL NOT NULL, messages TEXT NOT NULL, answer TEXT, finish_reason TEXT,
    latency_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
    feedback TEXT, correction TEXT, feedback_at REAL
);
CREATE INDEX IF NOT EXISTS traffic_run ON traffic (run, created_at);
CREATE INDEX IF NOT EXISTS traffic_project ON traffic (project, seq);
"""
PURGE_EVERY_S = 3600.0
_PII = [(re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "[email]"),
        (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[card]"),
        (re.compile(r"\+?\d[\d ()-]{7,}\d"), "[phone]")]


def redact_pii(text: str) -> str:
    """E-mail addresses, card-like and phone-like numbers masked (the built-in ``log_redact: pii``)."""
    for pattern, mask in _PII:
        text = pattern.sub(mask, text)
    return text


def redactor(spec: str | None) -> Callable[[str], str]:
    """The ``log_redact`` function: none, ``pii``, or ``module:function`` (a function str -> str)."""
    if not spec or spec == "none":
        return lambda text: text
    if spec == "pii":
        return redact_pii
    module, sep, name = spec.partition(":")
    if not sep:
        raise ConfigError(f"--log-redact {spec!r}: expected none, pii or module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--log-redact {spec!r}: cannot import it ({exc})",
                          hint="the module must be importable by the server (on PYTHONPATH)") from None
    if not callable(fn):
        raise ConfigError(f"--log-redact {spec!r} is not a function")
    return fn


def store_path(home: Path | None = None) -> Path:
    from tailored.models.registry import tailored_home

    return (Path(home) if home is not None else tailored_home() / "service") / "jobs.sqlite"


class TrafficLog:
    """The ``traffic`` table of the store at ``path``."""

    def __init__(self, path: str | Path, *, retention_days: float = 30.0, redact: Callable[[str], str] | None = None,
                 projects: list[str] | None = None) -> None:
        self.store = Store(path)
        with self.store.transaction() as db:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)
        self.retention_s = retention_days * 86400
        self.redact = redact or (lambda text: text)
        self.projects = set(projects or [])
        self._purged = time.time()

    def logs(self, project: str) -> bool:
        return not self.projects or project in self.projects

    def purge(self) -> int:
        """Delete rows past the retention; how many."""
        self._purged = time.time()
        with self.store.transaction() as db:
            return db.execute("DELETE FROM traffic WHERE created_at < ?", (time.time() - self.retention_s,)).rowcount

    def record(self, *, id: str, project: str, model: str, run: str | None, messages: list[dict[str, Any]],
               answer: str, finish_reason: str | None, latency_ms: float, usage: dict[str, Any]) -> None:
        if not self.logs(project):
            return
        clean = [{**m, "content": self._text(m.get("content"))} for m in messages]
        with self.store.transaction() as db:
            db.execute("INSERT INTO traffic (id, project, model, run, created_at, messages, answer, finish_reason, latency_ms, "
                       "prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (id, project, model, run, time.time(), json.dumps(clean), self.redact(answer), finish_reason,
                        round(latency_ms, 1), usage.get("prompt_tokens"), usage.get("completion_tokens")))
        if time.time() - self._purged > PURGE_EVERY_S:
            self.purge()

    def _text(self, content: Any) -> Any:
        if isinstance(content, str):
            return self.redact(content)
        if isinstance(content, list):
            return [{**p, "text": self.redact(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
                    for p in content]
        return content

    def feedback(self, scope: str | None, traffic_id: str, rating: str, correction: str | None = None) -> dict[str, Any]:
        """Mark an answer ``good`` or ``bad`` (with an optional corrected answer); the row as the API shows it."""
        self.row(scope, traffic_id)
        with self.store.transaction() as db:
            db.execute("UPDATE traffic SET feedback = ?, correction = ?, feedback_at = ? WHERE id = ?",
                       (rating, self.redact(correction) if correction else None, time.time(), traffic_id))
        return self.row(scope, traffic_id)

    def row(self, scope: str | None, traffic_id: str) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM traffic WHERE id = ?" + (" AND project = ?" if scope is not None else ""),
                                (traffic_id, scope) if scope is not None else (traffic_id,))
        if not rows:
            raise NotFound(f"no logged request {traffic_id!r}", param="id", code="traffic_not_found")
        return as_dict(rows[0])

    def rows(self, scope: str | None, *, model: str | None = None, run: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Logged requests, oldest first, that ``scope`` (a project; None: all) may see."""
        where, params = ["1 = 1"], []
        for column, value in (("project", scope), ("model", model), ("run", run)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        sql = f"SELECT * FROM traffic WHERE {' AND '.join(where)} ORDER BY seq ASC" + (f" LIMIT {int(limit)}" if limit else "")
        return [as_dict(r) for r in self.store.query(sql, tuple(params))]

    def close(self) -> None:
        self.store.close()


def as_dict(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "object": "traffic.request", "project": row["project"], "model": row["model"],
            "run": Path(row["run"]).name if row["run"] else None,  # the folder's name, never the server's paths
            "created_at": row["created_at"], "messages": json.loads(row["messages"]), "answer": row["answer"],
            "finish_reason": row["finish_reason"], "latency_ms": row["latency_ms"],
            "usage": {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"]},
            "feedback": row["feedback"], "correction": row["correction"]}


def open_traffic(settings: Any) -> TrafficLog | None:
    """The server's traffic log, or None when ``log_requests`` is off (the default: then nothing is ever written)."""
    if not settings.log_requests:
        return None
    log = TrafficLog(store_path(), retention_days=settings.log_retention_days, redact=redactor(settings.log_redact),
                     projects=settings.log_projects)
    log.purge()
    return log


def parse_since(text: str | float | None) -> float | None:
    """``--since`` / ``?since=``: a date (2026-12-01), a date and time (2026-12-01T08:00), or unix seconds."""
    from datetime import datetime

    if text is None or text == "":
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        raise ConfigError(f"since {text!r}: expected a date (2026-12-01), a date and time (2026-12-01T08:00) "
                          "or unix seconds") from None


async def log_completion(request: Any, entry: Any, messages: list[dict[str, Any]], completion_id: str, texts: list[str],
                         reasons: list[str], usage: dict[str, Any], started: float) -> None:
    """Record a finished chat completion when the server logs traffic (a no-op otherwise); never fails the request."""
    import asyncio
    import logging

    log = getattr(request.app.state, "traffic", None)
    if log is None:
        return
    try:
        await asyncio.to_thread(log.record, id=completion_id, project=request.state.caller.project, model=entry.id,
                                run=str(entry.run_dir.resolve()) if entry.run_dir is not None else None,
                                messages=messages, answer=texts[0] if texts else "", finish_reason=reasons[0] if reasons else None,
                                latency_ms=1000 * (time.monotonic() - started), usage=usage)
    except Exception:  # noqa: BLE001 - a full disk must not turn an answer into an error
        logging.getLogger("tailored.serve").exception("could not log request %s", completion_id)
