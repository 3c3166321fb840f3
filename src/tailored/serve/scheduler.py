"""The queue and the scheduler thread: which waiting requests decode together, and the batch counters.

Requests wait in a bounded queue (full: :class:`~tailored.serve.request.Overloaded`, HTTP 429). The
scheduler thread waits up to ``batch_wait_ms`` to collect them, then takes the oldest request plus every
queued request that can share its batch: the same group (the shared base and its adapters, or one
standalone model), at most ``max_batch`` rows, ``max_batch_tokens`` of prompt + completion and
``max_adapters`` adapters. The batch goes to ``run``; if it raises, every client still waiting is told.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from tailored.serve.request import GenRequest, Overloaded
from tailored.serve.settings import ServeSettings

log = logging.getLogger("tailored.serve")


class RequestQueue:
    """The bounded queue in front of a scheduler thread (this static one and :mod:`tailored.serve.continuous`).

    A subclass sets ``settings``, ``stats``, ``_pending``, ``_cond``, ``_stop`` and ``_thread``. Rows admitted
    but not yet decoding (``stats["waiting_rows"]``, continuous batching) count as waiting too.
    """

    settings: ServeSettings
    stats: dict[str, Any]
    _pending: collections.deque[GenRequest]
    _cond: threading.Condition
    _stop: bool
    _thread: threading.Thread

    def submit(self, req: GenRequest) -> None:
        """Queue a prepared request (raises :class:`Overloaded` when the queue is full)."""
        with self._cond:
            waiting = len(self._pending) + self.stats.get("waiting_rows", 0)
            if waiting >= self.settings.queue_size:
                raise Overloaded(f"the server is busy ({waiting} requests waiting)", hint="retry shortly")
            self._pending.append(req)
            self.stats["queued"] = len(self._pending)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)


class Scheduler(RequestQueue):
    """Collects submitted requests into batches and hands each to ``run`` on its own thread.

    ``stats`` counts batches, rows, the largest batch, batches mixing several adapters, generated tokens,
    rows stopped because their client left (``cancelled_rows``) or because they failed (``failed_rows``),
    and holds the rows decoding now (``active_rows``) and the requests waiting (``queued``). Served on
    ``/v1/stats``.
    """

    def __init__(self, settings: ServeSettings, run: Callable[[list[GenRequest]], None]) -> None:
        self.settings, self._run = settings, run
        self._pending: collections.deque[GenRequest] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self.stats: dict[str, Any] = {"batches": 0, "rows": 0, "max_rows": 0, "mixed_batches": 0, "tokens": 0,
                                      "active_rows": 0, "queued": 0, "cancelled_rows": 0, "failed_rows": 0}
        self._thread = threading.Thread(target=self._loop, name="tailored-scheduler", daemon=True)
        self._thread.start()


    def count(self, rows: int, *, mixed: bool) -> None:
        """A batch of ``rows`` starts (counted before it runs: clients may read stats as soon as they are answered)."""
        s = self.stats
        s["batches"] += 1
        s["rows"] += rows
        s["max_rows"] = max(s["max_rows"], rows)
        s["mixed_batches"] += int(mixed)

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
                while len(self._pending) < self.settings.max_batch and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._take_batch()
                self.stats["queued"] = len(self._pending)
            if batch:
                try:
                    self._run(batch)
                except Exception as exc:  # report to every waiting client; the server keeps running
                    log.error("batch of requests %s failed", ", ".join(r.request_id for r in batch), exc_info=exc)
                    for req in batch:
                        try:
                            req.fail(exc)
                        except Exception:
                            log.exception("could not report the failure to request %s", req.request_id)

    def _take_batch(self) -> list[GenRequest]:
        """The oldest request plus every queued request that fits with it (same group, within the bounds)."""
        group = self._pending[0].entry.group
        batch: list[GenRequest] = []
        rows = cost = 0
        adapters: set[str] = set()
        for req in list(self._pending):
            if req.cancelled.is_set():  # its client left while it waited
                self._pending.remove(req)
                self.stats["cancelled_rows"] += req.n
                continue
            if req.entry.group != group:
                continue
            new_adapters = adapters | ({req.entry.adapter_name} if req.entry.kind == "adapter" else set())
            if batch and (rows + req.n > self.settings.max_batch or cost + req.cost > self.settings.max_batch_tokens
                          or len(new_adapters) > self.settings.max_adapters):
                break
            batch.append(req)
            self._pending.remove(req)
            rows, cost, adapters = rows + req.n, cost + req.cost, new_adapters
        return batch
