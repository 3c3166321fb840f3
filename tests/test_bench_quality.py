"""bench/quality.py's training budget: a run cut to fit it, validation passes included, stays within it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


def _quality():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _schedule(max_steps: int | None = None):
    from tailored.train.hparams import resolve

    return resolve(n_examples=900, epochs="auto", batch_size="auto", learning_rate_multiplier="auto", base_learning_rate=1.0,
                   max_steps=max_steps, warmup_ratio=0.0, eval_every=None, save_every=None, guarded=True)


def test_the_budget_counts_every_validation_pass() -> None:
    """The banking77 run of 2026-12-06: ~9.7 s a step, ~33 s a validation pass, cut to 116 steps by a budget that
    took validation for 8% of the speed, and trained 22.7 minutes of its 20."""
    q = _quality()
    batch = _schedule().batch_size
    pace = q.Pace(tokens_per_s=batch * 100 / 9.7, tokens_per_example=100.0, validation_s=33.0)
    steps = q.fit_steps(1200, pace, _schedule().total_steps, _schedule)
    seconds = lambda n: n * 9.7 + 33.0 * (1 + sum(_schedule(n).validates_at(s) for s in range(1, n + 1)))  # noqa: E731
    assert seconds(steps) <= 1200 < seconds(steps + 1)
    assert 95 <= steps < 116
    roomy = q.Pace(tokens_per_s=1e9, tokens_per_example=100.0, validation_s=0.0)
    assert q.fit_steps(1200, roomy, 285, _schedule) == 285  # what fits is not cut


def test_a_pilot_measures_its_validation_pass(tiny_model_dir: Path, tmp_path: Path) -> None:
    import tailored
    from tailored.testing.tiny import write_chat_dataset

    q = _quality()
    data = write_chat_dataset(tmp_path / "train.jsonl", n=80)
    with contextlib.redirect_stdout(io.StringIO()):
        tailored.train(data=str(data), model=str(tiny_model_dir), output=str(tmp_path / "pilot"), max_steps=q.PILOT_STEPS,
                       eval_every=q.PILOT_STEPS, batch_size=4, max_seq_length=64, threads=1, red_flags="off")
    pace = q.pilot_pace(tmp_path / "pilot")
    assert pace.tokens_per_s > 0 and pace.validation_s > 0
    assert 5 < pace.tokens_per_example < 64
