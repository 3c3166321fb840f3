"""Resolve "auto" hyperparameters from the dataset size and the model size, as numbers.

Epochs and batch size follow the dataset size (:mod:`tailored.config.auto`, OpenAI's rule; up to 5 epochs for a
small set when validation and early stopping guard the run). The learning
rate is the method's base rate (set for 7-8B models: LoRA 2e-4 as in the QLoRA paper and Axolotl's and
Unsloth's LoRA examples) times :func:`size_multiplier`: ``(7e9 / parameters) ** 0.5`` between 0.5 and 8,
so 135M → ×7.2, 360M → ×4.4, 1B → ×2.6, 3B → ×1.5, 7-8B → ×1.0, 13B → ×0.73, 33-65B → ×0.5 (the QLoRA
paper's 1e-4 for 33B and 65B). The exponent was set by the banking77 sweep of ``bench/quality.py`` on the
135M model (×2.69 → 62.5%, ×5.4 → 71.0%, ×10.8 → 71.5%): the evidence and the measurements are in
docs/defaults.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tailored.config.auto import auto_batch_size, auto_epochs


REFERENCE_PARAMETERS = 7e9  # the model size the methods' base learning rates are set for


def size_multiplier(parameters: int | None) -> float:
    """``learning_rate_multiplier: auto``: ``(7e9 / parameters) ** 0.5`` within [0.5, 8], rounded to 2 digits."""
    if not parameters:
        return 1.0
    return round(min(8.0, max(0.5, (REFERENCE_PARAMETERS / parameters) ** 0.5)), 2)


@dataclass
class Resolved:
    epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    eval_every: int
    save_every: int

    def as_dict(self) -> dict:
        return asdict(self)

    def validates_at(self, step: int) -> bool:
        """Whether a run with validation data scores it after ``step`` (every ``eval_every`` steps and at the end)."""
        return step % self.eval_every == 0 or step == self.total_steps


def resolve(
    *,
    n_examples: int,
    epochs: int | str,
    batch_size: int | str,
    learning_rate_multiplier: float | str,
    base_learning_rate: float,
    max_steps: int | None,
    warmup_ratio: float,
    eval_every: int | None,
    save_every: int | str | None,
    world_size: int = 1,
    model_parameters: int | None = None,
    guarded: bool = False,
) -> Resolved:
    """``guarded``: the run has validation data and early stopping (``auto`` epochs may then be more)."""
    ep = auto_epochs(n_examples, guarded) if epochs == "auto" else int(epochs)
    bs = auto_batch_size(n_examples) if batch_size == "auto" else int(batch_size)
    bs = max(bs, world_size)
    mult = size_multiplier(model_parameters) if learning_rate_multiplier == "auto" else float(learning_rate_multiplier)
    steps_per_epoch = max(1, math.ceil(n_examples / bs))
    if steps_per_epoch > 1 and 0 < n_examples % bs < world_size:  # see data.batching.epoch_steps(min_size=)
        steps_per_epoch -= 1
    total = max_steps if max_steps else steps_per_epoch * ep
    if max_steps:
        ep = max(1, math.ceil(max_steps / steps_per_epoch))
    return Resolved(
        epochs=ep,
        batch_size=bs,
        learning_rate_multiplier=mult,
        learning_rate=base_learning_rate * mult,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=int(round(total * warmup_ratio)),
        eval_every=eval_every or max(1, math.ceil(total / 5)),  # 5 passes, the last at the end
        save_every=steps_per_epoch if save_every == "epoch" else (save_every or max(1, total // 4)),
    )
