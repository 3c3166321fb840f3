"""bench/gpu_check.sh: on a machine without CUDA it checks nothing, says so, and does not fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: run bench/gpu_check.sh itself")
def test_gpu_check_skips_cleanly_without_cuda():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert done.returncode == 0, done.stderr
    assert "SKIPPED, nothing was checked: no CUDA device" in done.stdout
    assert " ok " not in done.stdout and "Traceback" not in done.stderr
