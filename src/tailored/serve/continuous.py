"""The scheduler thread of continuous batching: requests go to their model's step engine, every busy engine steps.

Requests wait in a bounded queue (full: :class:`~tailored.serve.request.Overloaded`, HTTP 429). When the
engines are idle the thread waits up to ``batch_wait_ms`` for more requests (simultaneous clients start
together); otherwise a request is handed to its engine at the next step and its rows join the running
batch there (:mod:`tailored.engine.core`, which also picks fairly between adapters). ``place`` puts a
request into its engine, or returns False when it must wait (a standalone model that cannot be loaded
while another one is busy); ``engines`` lists the engines to step.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from tailored.engine.core import STAT_KEYS, StepEngine
from tailored.serve.request import GenRequest
from tailored.serve.scheduler import RequestQueue
from tailored.serve.settings import ServeSettings

log = logging.getLogger("tailored.serve")


class ContinuousScheduler(RequestQueue):
    """Feeds submitted requests to the step engines and steps them, on its own thread.

    ``stats`` (shared with the engines, served on ``/v1/stats``): ``batches`` counts busy periods (from
    the first row admitted into an idle engine until it is idle again), ``mixed_batches`` those in which
    rows of several adapters decoded together, ``rows``, ``max_rows``, ``tokens``, ``prefill_tokens``,
    ``prefix_hit_tokens`` (prompt tokens served from the prefix cache), ``active_rows``, ``waiting_rows``,
    ``queued`` (requests not yet handed to an engine), ``cancelled_rows``, ``failed_rows``.
    """

    def __init__(self, settings: ServeSettings, place: Callable[[GenRequest], bool],
                 engines: Callable[[], Iterable[StepEngine]], stats: dict[str, Any]) -> None:
        self.settings, self._place, self._engines = settings, place, engines
        self.stats = stats
        for key in (*STAT_KEYS, "queued"):
            self.stats.setdefault(key, 0)
        self._pending: collections.deque[GenRequest] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="tailored-engine", daemon=True)
        self._thread.start()


    def _busy(self) -> bool:
        return any(engine.busy for engine in self._engines())

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._pending and not self._stop and not self._busy():
                    self._cond.wait()
                if self._stop:
                    return
                if not self._busy():  # idle: collect the requests that arrive together
                    deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
                    while sum(r.n for r in self._pending) < self.settings.max_batch and not self._stop:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                taken = list(self._pending)
                self._pending.clear()
            held = [req for req in taken if not self._hand_over(req)]
            with self._cond:
                self._pending.extendleft(reversed(held))
                self.stats["queued"] = len(self._pending)
            for engine in list(self._engines()):
                if engine.busy:
                    try:
                        engine.step()
                    except Exception as exc:  # report to every row's client; the server keeps running
                        log.error("an engine step failed", exc_info=exc)
                        engine.fail_all(exc)

    def _hand_over(self, req: GenRequest) -> bool:
        """Give ``req`` to its engine; False when it must wait. A request that cannot be served fails alone."""
        if req.cancelled.is_set():  # its client left while it waited
            self.stats["cancelled_rows"] += req.n
            return True
        try:
            return self._place(req)
        except Exception as exc:  # noqa: BLE001 - reported to that request only
            req.fail(exc)
            return True
