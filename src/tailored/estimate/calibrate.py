"""Measure this machine: a few real forward/backward steps of a model, or a matmul benchmark.

``measure_steps`` runs Tailored's own training step (random tokens, the method's ``prepare``, the
training loop's loss on the labelled positions, AdamW) and reports the seconds per step, the achieved
FLOP/s and the peak resident memory of the steps alone (the kernel's high-water mark is reset after
loading, via ``/proc/self/clear_refs``). ``measure_in_subprocess``
runs it in a fresh interpreter so that the peak is not polluted by whatever ran before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tailored.models.shapes import ModelShape


def train_flops_per_token(shape: ModelShape, seq_len: int, *, trains_base: bool = False, gradient_checkpointing: bool = False,
                          label_share: float = 1.0) -> float:
    """FLOPs per trained token: 6·N when the base trains (full), ~4·N with a frozen base (+2·N with checkpointing).

    N counts the matrix multiplications (the input embedding is a lookup; a tied output head is the
    embedding matrix used as one). Training's loss projects only the labelled positions through the
    output head (``tailored.train.forward.token_loss``), so the head counts ``label_share`` of the
    tokens. The attention score/value products (``12·L·s·q`` for forward and backward) are added on top.
    """
    head = shape.vocab * shape.hidden
    matmuls = shape.n_params - (0 if shape.tied else head)
    passes = 6 if trains_base else 4
    if gradient_checkpointing:
        passes += 2
    attention = 2 * passes * shape.layers * seq_len * shape.q_dim / 2  # causal: half the scores
    return passes * (matmuls - head + head * label_share) + attention


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_steps(folder: str | Path, *, method: str = "lora", options: dict[str, Any] | None = None, batch_size: int = 1,
                  seq_len: int = 64, steps: int = 3, gradient_checkpointing: bool = False,
                  label_share: float = 1.0) -> dict[str, Any]:
    """Run ``steps`` of Tailored's training step of ``method`` on random tokens; time and memory.

    The model is loaded and prepared as training does it (``tailored.train.run.trainable_model``: the
    method's base loading, e.g. quantized, and its ``prepare``), and each step is the training loop's:
    the token loss on the labelled positions (``tailored.train.forward.token_loss``), backward,
    gradient clipping and an AdamW update. Methods with their own objective (DPO) are timed on the
    token loss of their trainable model.

    Args:
        folder: a local model folder (safetensors).
        method: any registered method.
        options: its settings (flat names, as for ``tailored train``); defaults when None.
        batch_size: sequences per step.
        seq_len: tokens per sequence.
        steps: steps to run; the first is a warm-up and is not timed.
        gradient_checkpointing: recompute activations in the backward pass.
        label_share: share of each sequence's (last) positions that carry a label, like assistant tokens.
    """
    import torch

    from tailored.data.batching import micro_batches
    from tailored.data.tokenize import IGNORE, Encoded
    from tailored.methods import get_method
    from tailored.methods.base import parse_options
    from tailored.train.forward import token_loss
    from tailored.train.run import trainable_model

    chosen = get_method(method)
    opts = parse_options(chosen, options or {})
    start_rss = _vm_rss()
    model = trainable_model(Path(folder), chosen, opts, device="cpu", gradient_checkpointing=gradient_checkpointing)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    unlabelled = min(seq_len - 1, max(0, round(seq_len * (1 - label_share))))
    loaded_rss = _vm_rss()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: measure the steps only
    except OSError:
        pass
    times, cpu = [], []
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=gen).tolist()
        rows = [Encoded(i, row, [IGNORE] * unlabelled + row[unlabelled:]) for i, row in enumerate(ids)]
        batch, = micro_batches(rows, pad_id=0, micro_batch_tokens=batch_size * seq_len)
        t0, c0 = time.perf_counter(), time.process_time()
        out = token_loss(model, batch, device="cpu")
        (out.loss_sum / max(out.n_tokens, 1)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    timed, cpu_timed = (times[1:] or times), (cpu[1:] or cpu)
    # CPU seconds: on a shared machine the wall time also counts other processes' turns on the core. The
    # fastest step: another process on the sibling core (or in the caches) only ever makes a step slower.
    return {"seconds_per_step": min(timed), "cpu_seconds_per_step": min(cpu_timed),
            "tokens_per_step": batch_size * seq_len,
            "start_rss": start_rss, "loaded_rss": loaded_rss, "peak_rss": _vm_hwm(), "threads": torch.get_num_threads(),
            "trainable": sum(p.numel() for p in params)}


def measure_in_subprocess(folder: str | Path, timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
    """:func:`measure_steps` in a fresh Python (1 thread), so the peak RSS belongs to this run alone."""
    code = ("import json,sys,torch; torch.set_num_threads(1); from tailored.estimate.calibrate import measure_steps; "
            "a=json.loads(sys.argv[1]); print(json.dumps(measure_steps(a.pop('folder'), **a)))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps({"folder": str(folder), **kwargs})], capture_output=True,
                         text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def matmul_flops(size: int = 512, repeats: int = 8) -> float:
    """FLOP/s of an fp32 ``size``×``size`` matmul on this CPU with the current thread count (from CPU time)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t0 = time.process_time()  # CPU time: other processes' turns on the core do not count
    for _ in range(repeats):
        a @ b
    # CPU time sums over threads: FLOPs / CPU seconds is the rate of one thread; the threads work in parallel.
    return 2 * size**3 * repeats / max(time.process_time() - t0, 1e-9) * torch.get_num_threads()
