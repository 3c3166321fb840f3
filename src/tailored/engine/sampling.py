"""What one row generates with: its settings, its sampling (greedy or nucleus, NaN-safe), the row itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tailored.engine import hooks as row_hooks
from tailored.engine.constraints import Structure
from tailored.engine.text import TextStream

Emit = Callable[[str, "str | None"], None]  # (new text, finish reason or None)


@dataclass
class GenerationSettings:
    """How to generate one answer: for :class:`ChatModel` (chat, eval) and each row of the engine.

    The server maps OpenAI's ``max_tokens`` / ``max_completion_tokens`` to ``max_new_tokens`` where a
    request comes in. ``seed``: here the batch's torch seed; in the server choice *i* uses ``seed + i``.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # cut before the first of these
    ignore_eos: bool = False  # generate max_new_tokens whatever the model says (benchmarks)
    constraint: Structure | None = None  # structured output: JSON schema, JSON object, regex or choice (engine/)
    logprobs: bool = False  # the server returns each answer token's logprob (OpenAI's ``logprobs``)
    top_logprobs: int = 0  # ... and this many most likely alternatives per token


@dataclass
class Row:
    """One sequence to generate (a request with ``n=3`` has three rows)."""

    prompt_ids: list[int]
    sampling: GenerationSettings
    stream: TextStream
    emit: Emit
    adapter: str = "__base__"
    cancelled: Callable[[], bool] = lambda: False
    generator: torch.Generator | None = None
    fail: Callable[[BaseException], None] | None = None  # told when this row cannot go on (it leaves the batch)
    hooks: list[Any] = field(default_factory=list)  # tailored.engine RowHooks: logprobs, constraints (in order)


GREEDY_BELOW = 1e-5  # temperatures under this decode greedily (as in vLLM): the limit of sampling as T → 0


class RowFailed(RuntimeError):
    """One row cannot continue (its logits are not finite); the other rows of the batch go on."""


def sample(logits: torch.Tensor, row: Row) -> int:
    """One token for one row: greedy below :data:`GREEDY_BELOW`, else nucleus sampling with the row's generator.

    NaN-safe for any finite logits and any temperature: the logits are shifted so that their maximum is
    0 before dividing by the temperature, so the most likely token always keeps probability 1 before
    normalising (no ``inf``, no ``0/0``). Logits that are NaN or +inf (a model gone wrong) fail the row.
    """
    s = row.sampling
    z = logits.double()
    top = z.max()
    if not torch.isfinite(top):
        raise RowFailed("the model produced non-finite logits (NaN or inf)")
    if s.temperature < GREEDY_BELOW:
        return int(z.argmax())
    probs = torch.softmax((z - top) / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        drop = sorted_p.cumsum(0) - sorted_p > s.top_p  # keep the smallest set reaching top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial((probs / probs.sum()).cpu(), 1, generator=row.generator))  # the row's generator is a CPU one


def pick_tokens(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Greedy argmax for temperature-0 rows, nucleus sampling with each row's generator otherwise."""
    out = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if row.sampling.temperature > 0:
            out[i] = sample(logits[i], row)
    return out


def advance(row: Row, logits: torch.Tensor, greedy: int) -> tuple[int, bool]:
    """One row's next token, added to its stream and emitted: (token, whether the row goes on)."""
    if row.hooks:  # per-row logits hooks (tailored.engine): they see, and may mask, this row's logits
        row_hooks.apply(row.hooks, logits)
        greedy = int(logits.argmax())
    token = sample(logits, row) if row.sampling.temperature > 0 else greedy
    if row.hooks:
        row_hooks.accept(row.hooks, token)
    delta, finish = row.stream.add(token, row.sampling.max_new_tokens)
    if delta or finish:
        row.emit(delta, finish)
    return token, finish is None
