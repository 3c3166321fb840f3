"""The per-row hook interface, and an HF ``LogitsProcessor`` that drives hooks inside ``model.generate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class RowHook(Protocol):
    """Called at each decode step of one row: ``process`` its logits, then ``accept`` the token picked."""

    def process(self, logits: torch.Tensor) -> None:
        """Look at (and maybe change, in place) this row's 1-D logits before a token is picked."""

    def accept(self, token: int) -> None:
        """The token picked for this row."""


def apply(hooks: Sequence[RowHook], logits: torch.Tensor) -> None:
    """Run every hook's ``process`` on one row's logits, in order (a logprob recorder first sees them raw)."""
    for hook in hooks:
        hook.process(logits)


def accept(hooks: Sequence[RowHook], token: int) -> None:
    for hook in hooks:
        hook.accept(token)


class HooksProcessor:
    """Per-row hooks as a transformers ``LogitsProcessor`` for a left-padded batch given to ``generate``.

    ``generate`` calls it once per step with the ids so far; the newest id of each row (from the second
    call on) is the token picked at the previous step. A row that picked one of ``stop_ids`` is finished
    (``generate`` pads it from then on): its hooks are not called again.
    """

    def __init__(self, rows: Sequence[Sequence[RowHook]], prompt_width: int, stop_ids: Sequence[int]) -> None:
        self.rows, self.width, self.stop = [list(r) for r in rows], prompt_width, set(stop_ids)
        self.done = [False] * len(self.rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i, hooks in enumerate(self.rows):
            if not hooks or self.done[i]:
                continue
            if input_ids.shape[1] > self.width:
                token = int(input_ids[i, -1])
                if token in self.stop:
                    self.done[i] = True
                    continue
                accept(hooks, token)
            apply(hooks, scores[i])
        return scores
