"""Nothing lost, nothing crashes: training under real faults.

Each test breaks a run for real: ``kill -9`` of the training process (at random moments and in the
middle of a checkpoint write), a full disk (``RLIMIT_FSIZE`` set on the running process), a read-only
checkpoints folder (``chattr +i``), a loss that really becomes NaN (an absurd learning rate), and a
``--resume`` with other settings or data. ``threads: auto`` is tested on injected CPU samples and on
this machine with a high load average.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tailored
from tailored.errors import CheckpointError, TailoredError
from tailored.train import run as train_run
from tailored.train.checkpoint import STATE_FILE, list_checkpoints

REPO = Path(__file__).resolve().parents[1]
SAVE_EVERY = 2


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl's records; a torn last line (a process killed while writing it) is left out."""
    if not (run / "metrics.jsonl").is_file():
        return []
    lines = (run / "metrics.jsonl").read_text().split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"line {i + 1} of metrics.jsonl is damaged: {line!r}"
    return records


def _train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in _metrics(run) if r["split"] == "train"]


def _assert_complete(ckpt: Path) -> None:
    """Every file of a checkpoint is there and readable."""
    from safetensors import safe_open

    state = json.loads((ckpt / STATE_FILE).read_text())
    assert state["step"] == int(ckpt.name.split("-")[1])
    for f in (ckpt / "optimizer.safetensors", ckpt / "rng.safetensors", ckpt / "weights" / "adapter_model.safetensors"):
        with safe_open(str(f), "pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    json.loads((ckpt / "weights" / "adapter_config.json").read_text())


def _temporaries(run: Path) -> set[str]:
    """Hidden temporary folders of an atomic write in progress (or left by a killed one)."""
    found = set()
    for folder in (run, run / "checkpoints"):
        if folder.is_dir():
            found |= {str(p) for p in folder.iterdir() if p.name.startswith(".") and ".tmp-" in p.name}
    return found


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tailored.cli.main", "train", *args]


def _settings(tiny_model_dir: Path, chat_file: Path, validation: Path, steps: int) -> list[str]:
    return ["--data", str(chat_file), "--validation", str(validation), "--model", str(tiny_model_dir),
            "--max-steps", str(steps), "--batch-size", "4", "--save-every", str(SAVE_EVERY), "--threads", "1",
            "--learning-rate-multiplier", "20", "--red-flags", "off"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env



# ---- threads: auto ---------------------------------------------------------------------------------

def test_auto_threads_is_a_function_of_cores_and_what_is_busy_now():
    from tailored.train.run import CpuTimes, auto_threads, busy_cores

    assert auto_threads(2, 0.0) == 2
    assert auto_threads(2, 0.3) == 2  # a little background noise
    assert auto_threads(2, 1.0) == 1  # one core taken by another process
    assert auto_threads(2, 2.0) == 1  # never fewer than one
    assert auto_threads(16, 3.2) == 13
    assert auto_threads(16, 0.0, world_size=4) == 4  # shared among processes
    assert auto_threads(2, 0.0, world_size=4) == 1
    # busy cores over a sample: other processes' busy time, this process's own left out
    cores = 2
    before = CpuTimes(busy=10_000, total=40_000, own=500)
    idle_but_me = CpuTimes(busy=10_000 + 50, total=40_000 + 100, own=500 + 50)  # only this process ran
    assert busy_cores(before, idle_but_me, cores) == pytest.approx(0.0)
    one_taken = CpuTimes(busy=10_000 + 50, total=40_000 + 100, own=500)  # 50 of 100 jiffies: one of two cores
    assert busy_cores(before, one_taken, cores) == pytest.approx(1.0)
    assert auto_threads(cores, busy_cores(before, one_taken, cores)) == 1
    assert busy_cores(before, before, cores) == 0.0  # no time passed: nothing known, nothing busy


def test_a_fresh_process_on_an_idle_machine_takes_every_core_whatever_the_load_average(monkeypatch):
    """The 1-minute load average still holds the previous command's load; what is busy *now* decides."""
    if not Path("/proc/stat").is_file():
        pytest.skip("needs /proc/stat (Linux)")
    for name in ("TAILORED_THREADS", "PYTEST_XDIST_WORKER", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))  # a decaying average of earlier runs
    samples = []
    real = train_run.busy_cores_now
    monkeypatch.setattr(train_run, "busy_cores_now", lambda *a, **k: samples.append(real(*a, **k)) or samples[-1])
    cores = os.cpu_count() or 1
    before = torch.get_num_threads()
    try:
        for _ in range(8):  # the machine is shared: wait for a moment when nothing else runs
            n = train_run.configure_threads("auto")
            if samples[-1] < 0.45:
                assert n == cores, (n, samples[-1])
                break
            assert n == train_run.auto_threads(cores, samples[-1])
            time.sleep(1.0)
        else:
            pytest.skip(f"the machine never went idle (busy cores: {samples})")
    finally:
        torch.set_num_threads(before)


def test_busy_cores_now_sees_another_process_spinning():
    if not Path("/proc/stat").is_file():
        pytest.skip("needs /proc/stat (Linux)")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert train_run.busy_cores_now(0.3) >= 0.6
    finally:
        spinner.kill()
        spinner.wait()
