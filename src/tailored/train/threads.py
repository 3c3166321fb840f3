"""How many CPU threads ``threads: auto`` gives torch: the cores other processes do not use *now*.

OpenMP threads wait for each other, so a thread on a core another process holds slows the whole step
down 20-40x. What is busy is a short sample of the machine's CPU time (Linux's ``/proc/stat``, less
this process's own), not the 1-minute load average, which still holds the previous command's load
for minutes after it ended.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CpuTimes:
    """CPU time in clock ticks since boot: all CPUs busy, all CPUs in all, and this process's own."""

    busy: int
    total: int
    own: int


def read_cpu_times(stat: str = "/proc/stat", self_stat: str = "/proc/self/stat") -> CpuTimes | None:
    """The machine's and this process's CPU time now (Linux's /proc); None where there is none."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
        with open(self_stat) as f:
            mine = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        if not fields or fields[0] != "cpu":
            return None
        v = [int(x) for x in fields[1:9]] + [0] * (9 - len(fields))  # user nice system idle iowait irq softirq steal
        return CpuTimes(busy=v[0] + v[1] + v[2] + v[5] + v[6] + v[7], total=sum(v), own=int(mine[11]) + int(mine[12]))
    except (OSError, ValueError, IndexError):
        return None


def busy_cores(before: CpuTimes, after: CpuTimes, cores: int) -> float:
    """Cores other processes kept busy between two samples (this process's own time left out)."""
    total = after.total - before.total  # ticks of all CPUs: cores x the time between the samples
    if total <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, min(float(cores), others * cores / total))


def busy_cores_now(sample_s: float = 0.25) -> float:
    """How many cores other processes use *now*: a short sample, not a decaying average (0.0 when unknown).

    The 1-minute load average still holds the previous command's load for minutes after it ended, so
    a run started right after another one would take 1 thread on an idle machine.
    """
    cores = os.cpu_count() or 1
    before = read_cpu_times()
    if before is None:
        try:
            import psutil  # other systems: the machine's use over the sample (this process sleeps meanwhile)
        except ImportError:
            return 0.0
        return float(psutil.cpu_percent(interval=sample_s)) * cores / 100.0
    time.sleep(sample_s)
    after = read_cpu_times()
    return busy_cores(before, after, cores) if after is not None else 0.0


def auto_threads(cores: int, busy: float, world_size: int = 1) -> int:
    """The threads of ``threads: auto``: the cores not busy now (``busy`` cores, rounded), shared among processes."""
    return max(1, max(1, int(cores - busy + 0.5)) // max(1, world_size))


def configure_threads(threads: int | str, world_size: int = 1) -> int:
    """Set torch's CPU threads and return the number.

    auto: ``$TAILORED_THREADS`` if set; 1 under pytest-xdist/CI; otherwise the cores that are not busy
    now (:func:`busy_cores_now`, a 0.25 s sample of the other processes' CPU time), shared among
    processes. OpenMP threads wait for each other, so a thread on a core another process holds slows
    the whole step down 20-40x.
    """
    if threads == "auto":
        env = os.environ.get("TAILORED_THREADS")
        if env:
            n = int(env)
        elif os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("CI"):
            n = 1
        else:
            n = auto_threads(os.cpu_count() or 1, busy_cores_now(), world_size)
    else:
        n = int(threads)
    n = max(1, n)
    torch.set_num_threads(n)
    return n
