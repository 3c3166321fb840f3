"""Rules for "auto" settings that depend only on the dataset size (used by data check and train)."""

from __future__ import annotations

import math


def auto_epochs(n_examples: int) -> int:
    """OpenAI's rule: 3 epochs, raised for tiny sets (≥100 example-passes), lowered for huge ones."""
    epochs = 3
    if n_examples * epochs < 100:
        epochs = min(25, math.ceil(100 / max(1, n_examples)))
    elif n_examples * epochs > 25_000:
        epochs = max(1, 25_000 // n_examples)
    return epochs


def auto_batch_size(n_examples: int) -> int:
    """About 2% of the data per step, a power of two between 4 and 32 (small data, CPU-friendly)."""
    target = max(1, n_examples // 50)
    return int(min(32, max(4, 2 ** round(math.log2(target)))))
