"""The one progress bar (training steps, evaluation answers and probe items): done/total, rate and ETA.

On a terminal it is a rich bar; otherwise (logs, CI) it prints a line every ~10 s and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Progress of ``total`` units of work, counted from ``start`` (a resumed run's step).

    Args:
        label: what is counted, shown first (``train``, ``answers tuned``).
        total: units of work in all.
        start: units already done before this process started (not counted in the rate).
        unit: the unit's name in the rate (``step`` → ``4.2 step/s``, or ``1.3 s/step`` when slower).
        enabled: False shows nothing (e.g. on every process but the main one).
        transient: remove the terminal bar when it closes.
    """

    def __init__(self, label: str, total: int, *, start: int = 0, unit: str = "step", enabled: bool = True,
                 transient: bool = False) -> None:
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.start = self.done = start
        self.t0 = time.time()
        self._last_print = 0.0
        self._bar: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=transient,
            )
            self._task = self._bar.add_task(label, total=total, completed=start, info="")
            self._bar.start()

    @property
    def rate(self) -> float:
        """Units per second since this process started."""
        return (self.done - self.start) / max(time.time() - self.t0, 1e-9)

    @property
    def eta(self) -> float:
        """Seconds left at the current rate."""
        return (self.total - self.done) * (time.time() - self.t0) / max(self.done - self.start, 1)

    def update(self, done: int, info: str = "") -> None:
        """``done`` units of ``total`` are done; ``info`` (e.g. the loss) is shown with the rate."""
        self.done = done
        if not self.enabled:
            return
        text = " · ".join(x for x in (info, self._rate_text()) if x)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=text)
        elif time.time() - self._last_print > 10 or done >= self.total:
            self._last_print = time.time()
            print(f"{self.label} {done}/{self.total} · {text} · ETA {self.eta:,.0f}s", file=sys.stderr, flush=True)

    def _rate_text(self) -> str:
        rate = self.rate
        if rate <= 0:
            return ""
        return f"{rate:,.1f} {self.unit}/s" if rate >= 1 else f"{1 / rate:,.1f} s/{self.unit}"

    def advance(self, n: int = 1, info: str = "") -> None:
        """``n`` more units are done."""
        self.update(self.done + n, info)

    def note(self, text: str) -> None:
        """A line of its own, printed above the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self.enabled = False
