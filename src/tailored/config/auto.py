"""Rules for "auto" settings that depend only on the dataset size (used by data check, estimate and train)."""

from __future__ import annotations

import math
from typing import Any


# ``validation: auto`` holds out part of a training file of at least this many examples (below, all are needed).
MIN_FOR_AUTO_VALIDATION = 60
MIN_AUTO_HOLDOUT = 32  # fewest held-out examples worth a validation curve
MAX_AUTO_HOLDOUT = 1000  # every validation pass costs a forward pass over them
# With a validation guard, small sets get at least this many example-passes, in at most GUARDED_MAX_EPOCHS epochs.
GUARDED_EXAMPLE_PASSES = 4_500
GUARDED_MAX_EPOCHS = 5
AUTO_PATIENCE = 2  # validations without improvement before stopping (with about 5 validations per run)


def auto_holdout_count(n: int) -> int:
    """How many of ``n`` training examples ``validation: auto`` holds out (0: too few to spare any): 10% up to
    5,000, 5% above, at least 32 while that stays within a fifth, at most 1,000 (tailored.train.validation)."""
    if n < MIN_FOR_AUTO_VALIDATION:
        return 0
    share = 0.10 if n <= 5000 else 0.05
    return int(min(MAX_AUTO_HOLDOUT, max(round(share * n), min(MIN_AUTO_HOLDOUT, n // 5))))


def guarded_run(validation: str, n_examples: int, early_stopping_patience: int | str = "auto") -> bool:
    """Whether a run of ``n_examples`` will have validation data and early stopping, what ``auto`` epochs call
    guarded: a validation file, or ``auto`` with enough examples to hold some out, and a patience that is not 0."""
    has_validation = validation != "none" and (validation != "auto" or auto_holdout_count(n_examples) > 0)
    return has_validation and resolve_patience(early_stopping_patience, has_validation) > 0


def check_patience(value: Any) -> int | str:
    """``early_stopping_patience`` as given (YAML, flag, API): ``auto`` or a whole number of validations, 0 for
    never; anything else is a :class:`ValueError` that says what is expected."""
    if value == "auto":
        return value
    try:
        n = -1 if isinstance(value, bool) or isinstance(value, float) and not value.is_integer() else int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise ValueError(f"{value!r}: expected auto, 0 (never stop early) or a positive number of validations")
    return n


def resolve_patience(setting: int | str, has_validation: bool) -> int:
    """``early_stopping_patience``: ``auto`` is :data:`AUTO_PATIENCE` with validation data, else 0 (never)."""
    if setting == "auto":
        return AUTO_PATIENCE if has_validation else 0
    return int(setting)


def auto_epochs(n_examples: int, guarded: bool = False) -> int:
    """OpenAI's rule: 3 epochs, raised for tiny sets (≥100 example-passes), lowered for huge ones.

    ``guarded`` (validation data and early stopping, so the best weights are kept whatever the length): a set
    of under 1,500 examples gets 4 or 5 epochs (≥4,500 example-passes), since more passes then cost time but
    not quality. banking77 (900 trained on, 2026-12-02): 3 epochs 0.710, 4 → 0.740, 5 → 0.755 accuracy, the
    validation loss improving at every validation (docs/defaults.md).
    """
    epochs = 3
    if n_examples * epochs < 100:
        epochs = min(25, math.ceil(100 / max(1, n_examples)))
    elif n_examples * epochs > 25_000:
        epochs = max(1, 25_000 // n_examples)
    elif guarded:
        epochs = min(GUARDED_MAX_EPOCHS, max(epochs, math.ceil(GUARDED_EXAMPLE_PASSES / n_examples)))
    return epochs


def auto_batch_size(n_examples: int) -> int:
    """About 2% of the data per step, a power of two between 4 and 32 (small data, CPU-friendly)."""
    target = max(1, n_examples // 50)
    return int(min(32, max(4, 2 ** round(math.log2(target)))))
