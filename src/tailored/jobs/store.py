"""The jobs service's durable state: files, jobs, events and checkpoints in one SQLite file (WAL).

Every write is a short transaction, so a server killed at any moment loses nothing that was
acknowledged. Each table keeps its rows in insertion order (``seq``); lists are pages of that order
with ``after=<id>`` cursors, as OpenAI's API pages them. JSON columns hold the nested parts of the
objects. Rows belong to a project; every read names the project (``None`` only for an admin).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project TEXT NOT NULL,
    filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL, status TEXT NOT NULL, status_details TEXT, report TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project TEXT NOT NULL,
    created_at INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT,
    key TEXT, UNIQUE (job_id, key)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, step INTEGER NOT NULL, model TEXT NOT NULL, metrics TEXT NOT NULL,
    UNIQUE (job_id, step)
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
CREATE INDEX IF NOT EXISTS checkpoints_job ON checkpoints (job_id, seq);
"""


def new_id(prefix: str, n: int = 12) -> str:
    """``prefix`` + random letters and digits (ids never hold ``/``, ``.`` or ``:``)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def now() -> int:
    return int(time.time())


class Store:
    """The SQLite file at ``path``; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- files -----------------------------------------------------------------------------
    def add_file(self, row: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO files (id, project, filename, purpose, bytes, sha256, created_at, status, "
                       "status_details, report) VALUES (:id, :project, :filename, :purpose, :bytes, :sha256, "
                       ":created_at, :status, :status_details, :report)", row)

    def file(self, file_id: str, project: str | None) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM files WHERE id = ?" + (" AND project = ?" if project is not None else ""),
                          (file_id, project) if project is not None else (file_id,))
        return rows[0] if rows else None

    def files(self, project: str | None, *, purpose: str | None = None, order: str = "desc") -> list[sqlite3.Row]:
        where, params = self._scope(project)
        if purpose:
            where, params = where + " AND purpose = ?", (*params, purpose)
        return self.query(f"SELECT * FROM files WHERE {where} ORDER BY seq {'ASC' if order == 'asc' else 'DESC'}", params)

    def delete_file(self, file_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def file_in_use(self, sha256: str) -> bool:
        return bool(self.query("SELECT 1 FROM files WHERE sha256 = ? LIMIT 1", (sha256,)))

    # ---- jobs ------------------------------------------------------------------------------
    def add_job(self, job_id: str, project: str, body: dict[str, Any], state: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO jobs (id, project, created_at, status, body, state) VALUES (?, ?, ?, ?, ?, ?)",
                       (job_id, project, body["created_at"], body["status"], json.dumps(body), json.dumps(state)))

    def job(self, job_id: str, project: str | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(the job object, the service's private state) or None."""
        rows = self.query("SELECT * FROM jobs WHERE id = ?" + (" AND project = ?" if project is not None else ""),
                          (job_id, project) if project is not None else (job_id,))
        return (json.loads(rows[0]["body"]), json.loads(rows[0]["state"])) if rows else None

    def update_job(self, job_id: str, body: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> None:
        """Merge ``body`` into the job object and ``state`` into its private state, in one transaction."""
        with self.transaction() as db:
            row = db.execute("SELECT body, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            new_body = {**json.loads(row["body"]), **(body or {})}
            new_state = {**json.loads(row["state"]), **(state or {})}
            db.execute("UPDATE jobs SET body = ?, state = ?, status = ? WHERE id = ?",
                       (json.dumps(new_body), json.dumps(new_state), new_body["status"], job_id))

    def jobs(self, project: str | None, *, status: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Job objects, newest first."""
        where, params = self._scope(project)
        if status:
            where += f" AND status IN ({','.join('?' * len(status))})"
            params = (*params, *status)
        return [json.loads(r["body"]) for r in self.query(f"SELECT body FROM jobs WHERE {where} ORDER BY seq DESC", params)]

    def job_ids(self, *, status: tuple[str, ...]) -> list[str]:
        """Ids of jobs in these states, oldest first (the queue order)."""
        marks = ",".join("?" * len(status))
        return [r["id"] for r in self.query(f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY seq ASC", status)]

    # ---- events and checkpoints ------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
        """Append an event; one with a ``key`` (a metrics line's split and step) is recorded once, however often sent."""
        event = {"id": new_id("ftevent-", 24), "object": "fine_tuning.job.event", "created_at": now(), "level": level,
                 "message": message, "type": type, "data": data}
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO events (id, job_id, created_at, level, message, type, data, key) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (event["id"], job_id, event["created_at"], level, message, type, json.dumps(data), key))
        return event

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Events of a job, newest first."""
        rows = self.query("SELECT * FROM events WHERE job_id = ? ORDER BY seq DESC", (job_id,))
        return [{"id": r["id"], "object": "fine_tuning.job.event", "created_at": r["created_at"], "level": r["level"],
                 "message": r["message"], "type": r["type"], "data": json.loads(r["data"]) if r["data"] else None}
                for r in rows]

    def add_checkpoint(self, job_id: str, step: int, model: str, metrics: dict[str, Any]) -> bool:
        """Record a checkpoint once (False when that step is recorded already)."""
        with self.transaction() as db:
            cur = db.execute("INSERT OR IGNORE INTO checkpoints (id, job_id, created_at, step, model, metrics) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (new_id("ftckpt_", 24), job_id, now(), step, model, json.dumps(metrics)))
            return cur.rowcount == 1

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Checkpoints of a job, newest first."""
        rows = self.query("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step DESC", (job_id,))
        return [{"id": r["id"], "object": "fine_tuning.job.checkpoint", "created_at": r["created_at"],
                 "fine_tuned_model_checkpoint": r["model"], "fine_tuning_job_id": job_id, "step_number": r["step"],
                 "metrics": json.loads(r["metrics"])} for r in rows]

    def remove_checkpoints(self, job_id: str, steps: list[int]) -> None:
        if not steps:
            return
        with self.transaction() as db:
            db.executemany("DELETE FROM checkpoints WHERE job_id = ? AND step = ?", [(job_id, s) for s in steps])

    @staticmethod
    def _scope(project: str | None) -> tuple[str, tuple[Any, ...]]:
        return ("project = ?", (project,)) if project is not None else ("1 = 1", ())


def page(items: list[dict[str, Any]], *, after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's list envelope: the ``limit`` items strictly after ``after`` in the given order."""
    start = 0
    if after:
        ids = [i["id"] for i in items]
        start = ids.index(after) + 1 if after in ids else len(items)  # an unknown cursor ends the listing
    data = items[start:start + limit]
    return {"object": "list", "data": data, "has_more": start + limit < len(items),
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
