"""``check_data``: the data check with the model's tokenizer and this machine's expected speed."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from tailored.config.auto import check_patience
from tailored.data.check import CheckReport, check_file
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES
from tailored.errors import ConfigError
from tailored.models.load import load_tokenizer, local_folder

# Real (non-pad) training tokens per second, per thread, of a default LoRA run of a 135M-parameter model on the
# reference 2-core machine: bench/quality.py's banking77 runs with the defaults trained 211-330 tokens/s on
# 2 threads (2026-12-02 and -03; bench/results/quality-banking77*.json), so the slowest, halved. Scaled by the threads
# (at most 2: more were never measured here) and inversely with the parameter count. A rough guide:
# `tailored estimate` measures the machine at hand. (Until 2026-12-03: 80 on one core, from 2026-11-29's
# slower training loop, which made `data check` say 22 minutes for a 5-minute run.)
CPU_TOKENS_PER_S_135M_PER_THREAD = 105.0


def estimated_tokens_per_second(folder: Path, threads: int | None = None) -> float | None:
    """Rough training tokens/s of the model in ``folder`` on this CPU with ``threads`` (default: the cores, at most 2)."""
    import json
    import os

    threads = threads or min(2, os.cpu_count() or 1)
    try:
        cfg = json.loads((folder / "config.json").read_text())
        h, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    except (OSError, KeyError, ValueError):
        return None
    params = layers * (4 * h * h + 3 * h * inter) + vocab * h
    return CPU_TOKENS_PER_S_135M_PER_THREAD * min(threads, 2) * 134.5e6 / max(params, 1)


def check_data(path: str | Path, *, model: str | None = "smollm2", format: str = "auto", max_seq_length: int = 1024,
               epochs: int | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               validation: str = "auto", early_stopping_patience: int | str = "auto",
               neighbours: int | str = "auto") -> CheckReport:
    """Validate a data file; with ``model``, add token statistics, context checks and a time estimate.

    Args:
        path: JSONL file in any supported format.
        model: the model whose tokenizer and chat template count the tokens (None: skip token checks).
        format: force a format instead of auto-detection.
        max_seq_length: examples longer than this are reported.
        epochs: epochs for the total-token estimate (default: the auto rule).
        max_line_bytes: longest line read; a longer one is an error naming its line.
        validation: training's ``validation`` (``auto``, ``none`` or a file): what is held out and the auto epochs.
        early_stopping_patience: training's; 0 leaves the run unguarded, so the auto epochs are the unguarded ones.
        neighbours: training's; the labelled training requests a classification prompt lists are counted.
    """
    if validation not in ("auto", "none") and not Path(validation).is_file():
        raise ConfigError(f"--validation {validation}: no such file",
                          hint="give the validation file training will use, or auto (hold out part of the data) or none")
    try:
        early_stopping_patience = check_patience(early_stopping_patience)
    except ValueError as e:
        raise ConfigError(f"early_stopping_patience {e}", hint="as in `tailored train`: auto, 0 or N") from None
    tokenizer = tps = None
    if model is not None:
        folder = local_folder(model)
        tokenizer = load_tokenizer(folder)
        tps = estimated_tokens_per_second(folder)
    report = check_file(path, tokenizer=tokenizer, max_seq_length=max_seq_length, format=format, epochs=epochs,
                        tokens_per_second=tps, max_line_bytes=max_line_bytes, validation=validation,
                        early_stopping_patience=early_stopping_patience)
    if report.token_stats and not report.has_errors:
        count_neighbours(report, neighbours, tokenizer, max_seq_length)
    return report


def count_neighbours(report: CheckReport, setting: int | str, tokenizer: Any, max_seq_length: int) -> None:
    """The token and time estimate of ``report`` with the labelled neighbours training lists in each prompt
    (tailored.models.neighbours; ``auto`` steps aside, and says so, where training's would)."""
    from tailored.data.check import Problem
    from tailored.data.tokenize import encode_example
    from tailored.models.neighbours import Neighbours, resolve_k, steps_aside

    k, _ = resolve_k(setting, report.examples)
    if not k:
        return
    examples = Neighbours.build(report.examples, k).training_examples(report.examples)
    lengths = [len(encode_example(tokenizer, ex)) for ex in examples]
    if why := steps_aside(setting, k, sum(n > max_seq_length for n in lengths) - len(report.overlength), max_seq_length):
        report.problems.append(Problem(0, "neighbours_off", why, severity="warning"))
        return
    t = report.token_stats
    share = sum(lengths) / max(t["total"], 1)
    t.update(neighbours=k, listed_median=int(statistics.median(lengths)), epoch_tokens=round(t["epoch_tokens"] * share))
    if t.get("estimated_seconds"):
        t["estimated_seconds"] = round(t["estimated_seconds"] * share, 1)
