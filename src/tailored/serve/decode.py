"""The static batched decode loop (``batching: static``): prefill a left-padded batch, then one token per step.

Kept as the reference the serving benchmark measures :mod:`tailored.engine` against: a batch runs to its
end and requests arriving meanwhile wait for the next one.

Each row carries its own sampling settings, stop tokens, stop strings and token limit, and may use a
different LoRA adapter (through :mod:`tailored.engine.lora`'s hooks). Finished rows leave the batch (their KV cache rows
are dropped), so one long answer does not make short ones pay. Text is produced incrementally: a row
emits only text that can no longer turn into a stop string or an unfinished UTF-8 character.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from tailored.engine.sampling import GREEDY_BELOW, Row, RowFailed, advance, pick_tokens, sample
from tailored.engine.text import TextStream

__all__ = ["GREEDY_BELOW", "Row", "RowFailed", "TextStream", "pick_tokens", "run_batch", "sample"]
log = logging.getLogger("tailored.serve")


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
        mixer: the batch's :class:`~tailored.engine.lora.RowAdapters` (hooks already on the model), told
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
                    token, goes_on = advance(row, logits[i], greedy[i])
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
