"""What a method trains *towards*: the optional ``objective`` of a method.

By default every method minimises the next-token loss on the assistant tokens, and needs nothing
here. A method with another goal (DPO's preference loss) defines ``objective(options)`` returning an
object with the three hooks below; training then encodes, batches and scores through it, and still
never looks at the method's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from tailored.data.records import Example
from tailored.data.tokenize import EncodeStats


@dataclass
class ObjectiveLoss:
    """One micro-batch's result, shaped like the token loss: a differentiable sum and counts."""

    loss_sum: torch.Tensor  # summed over the batch's units (tokens, pairs, ...); the loop divides by the step's n_labels
    n_tokens: int  # units scored (the denominator for means)
    n_correct: int  # units "right" (logged as token_accuracy)


@runtime_checkable
class Objective(Protocol):
    def encode(self, tokenizer: Any, examples: Iterable[Example], *, max_seq_length: int,
               overlength: str = "drop") -> tuple[list[Any], EncodeStats]:
        """Rows (each with ``len()`` for length-bucketing) and what was dropped or cut."""

    def batches(self, rows: Sequence[Any], *, pad_id: int, micro_batch_tokens: int, strategy: str = "bucket",
                max_seq_length: int = 2048) -> list[Any]:
        """Micro-batches; each has ``n_labels`` (units the loss is averaged over) and ``n_real_tokens``."""

    def loss(self, model: torch.nn.Module, batch: Any, *, device: torch.device | str = "cpu") -> ObjectiveLoss:
        """The summed loss of one micro-batch."""
