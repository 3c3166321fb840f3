"""``validation: auto``: hold out a stratified share of the training data so overfitting is always judged.

The rule (see docs/defaults.md): 10% of the examples up to 5,000, 5% above, at least 32 (a validation
loss over fewer is mostly noise) while that stays within a fifth of the data, at most 1,000 (every
validation pass costs a forward pass over it). Stratified by the answer when the answers form a label
set (:func:`tailored.data.split.split_examples`), so every intent is in both parts, else by length. A
set too small to give up a few dozen examples (under 60), or one whose labels would lose their only
training example, keeps all its examples and says why: the overfitting check is then reported as
skipped, never passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tailored.config.auto import AUTO_PATIENCE, MIN_FOR_AUTO_VALIDATION, auto_holdout_count, resolve_patience
from tailored.data.split import split_examples
from tailored.errors import DataError

__all__ = ["AUTO_PATIENCE", "HeldOut", "auto_holdout_count", "hold_out", "resolve_patience"]


@dataclass
class HeldOut:
    """The result of ``validation: auto``: what is trained on, what is held out, and how it was chosen."""

    train_index: list[int]  # positions in the checked examples, file order
    validation_index: list[int]
    stratified_by: str | None = None
    reason: str | None = None  # why nothing was held out
    lines: list[int] = field(default_factory=list)  # the held-out examples' line numbers in the training file

    def describe(self, path: str) -> str:
        if not self.validation_index:
            return (f"validation: none held out from {path} ({self.reason}); overfitting cannot be judged "
                    "— pass --validation FILE")
        n = len(self.train_index) + len(self.validation_index)
        return (f"validation: auto — {len(self.validation_index)} of {n} examples of {path} held out "
                f"({len(self.validation_index) / n:.0%}, stratified by {self.stratified_by}); "
                "--validation FILE to give your own, --validation none to train on all")


def hold_out(examples: list[Any], *, seed: int) -> HeldOut:
    """Choose the held-out examples for ``validation: auto`` (deterministic for a seed)."""
    n = len(examples)
    count = auto_holdout_count(n)
    everything = list(range(n))
    if count == 0:
        return HeldOut(everything, [], reason=f"{n} examples; {MIN_FOR_AUTO_VALIDATION} or more are needed to hold some out")
    position = {id(ex): i for i, ex in enumerate(examples)}  # the split returns the same objects
    try:
        parts, by = split_examples(examples, validation=count, test=0, seed=seed, stratify="auto")
    except DataError as exc:  # a label with too few examples to give one up
        return HeldOut(everything, [], reason=str(exc).split(":")[0])
    val = sorted(position[id(ex)] for ex in parts["validation"])
    train = sorted(position[id(ex)] for ex in parts["train"])
    return HeldOut(train, val, stratified_by="answer (label)" if by == "label" else "length",
                   lines=[examples[i].line for i in val])
