"""Two processes (torchrun, gloo) reach the same losses as one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import tailored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


@pytest.mark.slow
def test_two_processes_match_one(tiny_model_dir, chat_file, tmp_path):
    common = ["--data", str(chat_file), "--model", str(tiny_model_dir), "--max-steps", "6", "--batch-size", "8",
              "--learning-rate-multiplier", "20", "--threads", "1", "--micro-batch-tokens", "64"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "tailored.cli.main", "train", *common, "--output", str(tmp_path / "two")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("done: 6 steps") == 1  # only rank 0 reports
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["environment"]["processes"] == 2
    one = tailored.train(data=str(chat_file), model=str(tiny_model_dir), max_steps=6, batch_size=8,
                         learning_rate_multiplier=20, threads=1, output=str(tmp_path / "one"))
    assert _losses(tmp_path / "two") == pytest.approx(_losses(one.run_dir), rel=1e-4)
