"""The batched decode loop: prefill a left-padded batch, then one token per step with a KV cache.

Each row carries its own sampling settings, stop tokens, stop strings and token limit, and may use a
different LoRA adapter (through :mod:`tailored.serve.lora_bank`'s hooks). Finished rows leave the batch (their KV cache rows
are dropped), so one long answer does not make short ones pay. Text is produced incrementally: a row
emits only text that can no longer turn into a stop string or an unfinished UTF-8 character.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tailored.eval.generate import GenerationSettings

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


def pick_tokens(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Greedy argmax for temperature-0 rows, nucleus sampling with each row's generator otherwise."""
    out = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        s = row.sampling
        if s.temperature <= 0:
            continue
        probs = torch.softmax(logits[i].float() / s.temperature, dim=-1)
        if s.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            drop = sorted_p.cumsum(0) - sorted_p > s.top_p  # keep the smallest set reaching top_p
            sorted_p[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        out[i] = int(torch.multinomial(probs / probs.sum(), 1, generator=row.generator))
    return out


@torch.no_grad()
def run_batch(model: torch.nn.Module, rows: list[Row], pad_id: int, *, mixer: Any = None) -> int:
    """Generate every row to completion, calling each row's ``emit`` as text becomes final.

    Args:
        model: a causal LM.
        rows: the sequences; their prompts are left-padded together.
        pad_id: token used for padding (masked out).
        mixer: the batch's :class:`~tailored.serve.lora_bank.RowAdapters` (hooks already on the model), told
            the rows' adapters whenever rows leave the batch; None for a model without adapters.

    Returns:
        the number of tokens generated.
    """
    from transformers import DynamicCache

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

    logits = forward(ids, positions)
    last_pos = positions[:, -1]
    while active:
        tokens = pick_tokens(logits, active)
        generated += len(tokens)
        keep: list[int] = []
        for i, (row, token) in enumerate(zip(active, tokens)):
            if row.cancelled():
                continue
            delta, finish = row.stream.add(token, row.sampling.max_new_tokens)
            if delta or finish:
                row.emit(delta, finish)
            if finish is None:
                keep.append(i)
        if not keep:
            break
        if len(keep) < len(active):  # drop finished rows from the batch and the cache
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, last_pos = mask[index], last_pos[index]
            tokens = [tokens[i] for i in keep]
            active = [active[i] for i in keep]
            if mixer is not None:
                mixer.set_rows([r.adapter for r in active])
        mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
        last_pos = last_pos + 1
        logits = forward(torch.tensor(tokens, device=device)[:, None], last_pos[:, None])
    return generated
