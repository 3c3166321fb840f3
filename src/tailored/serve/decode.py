"""The batched decode loop: prefill a left-padded batch, then one token per step with a KV cache.

Each row carries its own sampling settings, stop tokens, stop strings and token limit, and may use a
different LoRA adapter (through :mod:`tailored.serve.lora_bank`'s hooks). Finished rows leave the batch (their KV cache rows
are dropped), so one long answer does not make short ones pay. Text is produced incrementally: a row
emits only text that can no longer turn into a stop string or an unfinished UTF-8 character.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tailored.engine import hooks as row_hooks
from tailored.eval.generate import GenerationSettings

log = logging.getLogger("tailored.serve")
Emit = Callable[[str, "str | None"], None]  # (new text, finish reason or None)


class TextStream:
    """Token ids in, printable text deltas out; finds stop tokens and stop strings."""

    def __init__(self, tokenizer: Any, stop_ids: set[int], stop: list[str]) -> None:
        self.tokenizer, self.stop_ids, self.stop = tokenizer, stop_ids, [s for s in stop if s]
        self.tokens: list[int] = []
        self.sent = 0  # characters already emitted
        self.count = 0  # generated tokens, including a final stop token

    def add(self, token: int, limit: int) -> tuple[str, str | None]:
        """Add one generated token; returns (text to emit now, finish reason or None)."""
        self.count += 1
        if token in self.stop_ids:
            return self._flush(self._text()), "stop"
        self.tokens.append(token)
        text = self._text()
        for s in self.stop:
            if s in text:
                return self._flush(text[: text.index(s)]), "stop"
        if self.count >= limit:
            return self._flush(text), "length"
        end = len(text) - self._held_back(text)
        if end <= self.sent:
            return "", None
        delta, self.sent = text[self.sent : end], end
        return delta, None

    def _text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def _flush(self, text: str) -> str:
        delta, self.sent = text[self.sent :], max(self.sent, len(text))
        return delta

    def _held_back(self, text: str) -> int:
        """Characters at the end that may still change: a partial UTF-8 char or a stop string's prefix."""
        hold = 1 if text.endswith("\ufffd") else 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return hold


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
    return int(torch.multinomial(probs / probs.sum(), 1, generator=row.generator))


def pick_tokens(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Greedy argmax for temperature-0 rows, nucleus sampling with each row's generator otherwise."""
    out = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if row.sampling.temperature > 0:
            out[i] = sample(logits[i], row)
    return out


def _step(row: Row, logits: torch.Tensor, greedy: int) -> tuple[int, bool]:
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


@torch.no_grad()
def run_batch(model: torch.nn.Module, rows: list[Row], pad_id: int, *, mixer: Any = None,
              stats: dict[str, Any] | None = None) -> int:
    """Generate every row to completion, calling each row's ``emit`` as text becomes final.

    A row that fails (its sampling, its text stream, its ``emit``) leaves the batch and its ``fail`` is
    told (without one, the failure is raised); a row whose ``cancelled()`` turns true leaves it too. Only
    a failure of the forward pass, which every row shares, ends the batch (it is raised).

    Args:
        model: a causal LM.
        rows: the sequences; their prompts are left-padded together.
        pad_id: token used for padding (masked out).
        mixer: the batch's :class:`~tailored.serve.lora_bank.RowAdapters` (hooks already on the model), told
            the rows' adapters whenever rows leave the batch; None for a model without adapters.
        stats: counters kept up to date as rows come and go: ``active_rows``, ``cancelled_rows``, ``failed_rows``.

    Returns:
        the number of tokens generated.
    """
    from transformers import DynamicCache

    stats = stats if stats is not None else {}
    for key in ("active_rows", "cancelled_rows", "failed_rows"):
        stats.setdefault(key, 0)
    device = next(model.parameters()).device
    width = max(len(r.prompt_ids) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    active = list(rows)
    generated = 0

    def forward(inputs: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=inputs, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                    logits_to_keep=1)
        return out.logits[:, -1, :]

    stats["active_rows"] += len(active)
    try:
        logits = forward(ids, positions)
        last_pos = positions[:, -1]
        while active:
            greedy = logits.argmax(dim=-1).tolist()  # one call for all rows; sampling rows draw their own
            generated += len(active)
            keep: list[int] = []
            tokens: list[int] = []
            for i, row in enumerate(active):
                if row.cancelled():
                    stats["cancelled_rows"] += 1
                    continue
                try:
                    token, goes_on = _step(row, logits[i], greedy[i])
                except Exception as exc:
                    stats["failed_rows"] += 1
                    if row.fail is None:
                        raise
                    _tell(row.fail, exc)
                    continue
                if goes_on:
                    keep.append(i)
                    tokens.append(token)
            stats["active_rows"] -= len(active) - len(keep)
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                active = [active[i] for i in keep]
                if not active:
                    break
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, last_pos = mask[index], last_pos[index]
                if mixer is not None:
                    mixer.set_rows([r.adapter for r in active])
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            last_pos = last_pos + 1
            logits = forward(torch.tensor(tokens, device=device)[:, None], last_pos[:, None])
    finally:
        stats["active_rows"] -= len(active)
    return generated


def _tell(fail: Callable[[BaseException], None], exc: BaseException) -> None:
    try:
        fail(exc)
    except Exception:
        log.exception("could not report a row's failure")
