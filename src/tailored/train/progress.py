"""A progress bar for training: step, loss, real tokens/s and ETA (rich; quiet when not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True) -> None:
        self.total, self.start_step, self.enabled = total, start, enabled
        self.t0 = time.time()
        self.tokens = 0
        self.tokens_per_s = 0.0
        self._bar: Any = None
        self._task: Any = None
        self._last_print = 0.0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = RichProgress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
                disable=not sys.stderr.isatty(),
            )
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, *, loss: float, tokens: float) -> None:
        self.tokens += int(tokens)
        elapsed = max(time.time() - self.t0, 1e-9)
        self.tokens_per_s = self.tokens / elapsed
        if not self.enabled:
            return
        info = f"loss {loss:.4f} · {self.tokens_per_s:,.0f} tok/s"
        self._bar.update(self._task, completed=step, info=info)
        if not sys.stderr.isatty() and (time.time() - self._last_print > 10 or step == self.total):
            self._last_print = time.time()
            done = step - self.start_step
            eta = (self.total - step) * elapsed / max(done, 1)
            print(f"step {step}/{self.total} · {info} · ETA {eta:,.0f}s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            self._bar.console.print(text) if sys.stderr.isatty() else print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self.enabled = False
