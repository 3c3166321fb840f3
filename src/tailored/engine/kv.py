"""The running batch's KV cache as plain tensors: rows join (left-padded to one width), leave, and padding is trimmed.

Each layer holds keys and values of shape ``[rows, heads, width, head_dim]``; a row shorter than the
batch is padded on the left and masked out (``mask`` is ``[rows, width]``, 1 where a row has a real
token). Positions are each row's own, so a row's keys are the same whatever batch it sits in.

Prefill packs several rows' next chunks into one sequence instead (:func:`pack`, :func:`unpack`): no
padding at all, a block-diagonal mask, and each row's own KV cut back out after the pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), [rows, heads, length, head_dim]


def engine_problem(model: torch.nn.Module) -> str | None:
    """Why the step engine cannot run ``model`` (None when it can): it needs one full-attention KV per layer."""
    config = getattr(model, "config", None)
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "the model adds virtual tokens (prompt learning), which need peft's own generate"
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"} or getattr(text, "sliding_window", None):
        return f"the model has {', '.join(sorted(kinds - {'full_attention'})) or 'sliding-window'} layers"
    if getattr(config, "is_encoder_decoder", False):
        return "the model is an encoder-decoder"
    return None


def new_cache(kv: KV | None = None) -> Any:
    """A ``DynamicCache`` holding ``kv`` (no copy), or an empty one."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv or []):
        if len(cache.layers) <= i:
            cache.layers.append(DynamicLayer())
        layer = cache.layers[i]
        if not layer.is_initialized:
            layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    return cache


def tensors(cache: Any) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    if n <= 0:
        return t
    return torch.cat([t.new_zeros(t.shape[0], t.shape[1], n, t.shape[3]), t], dim=2)


def join(cache: Any, mask: torch.Tensor | None, rows: list[KV]) -> tuple[Any, torch.Tensor]:
    """The batch ``cache`` (None: empty) with each of ``rows`` (a one-row KV) appended, and its new mask."""
    old = tensors(cache) if cache is not None else []
    width = mask.shape[1] if mask is not None else 0
    lengths = [kv[0][0].shape[2] for kv in rows]
    new_width = max([width, *lengths])
    layers = []
    for i in range(len(rows[0])):
        parts_k = ([pad_left(old[i][0], new_width - width)] if old else []) + [pad_left(kv[i][0], new_width - n) for kv, n in zip(rows, lengths)]
        parts_v = ([pad_left(old[i][1], new_width - width)] if old else []) + [pad_left(kv[i][1], new_width - n) for kv, n in zip(rows, lengths)]
        layers.append((torch.cat(parts_k), torch.cat(parts_v)))
    device = rows[0][0][0].device
    masks = [] if mask is None else [torch.cat([mask.new_zeros(mask.shape[0], new_width - width), mask], dim=1)]
    masks += [torch.cat([torch.zeros(1, new_width - n, dtype=torch.long, device=device),
                         torch.ones(1, n, dtype=torch.long, device=device)], dim=1) for n in lengths]
    return new_cache(layers), torch.cat(masks)


def select(cache: Any, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Keep the rows ``keep`` (in place on ``cache``), drop columns no kept row uses; returns the new mask."""
    index = torch.tensor(keep, device=mask.device)
    cache.batch_select_indices(index)
    mask = mask[index]
    first = int(mask.any(dim=0).to(torch.int8).argmax())
    if first > 0:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        mask = mask[:, first:]
    return mask


@dataclass
class Packed:
    """Several rows' next prefill chunks packed into one sequence (batch 1, no padding)."""

    input_ids: torch.Tensor  # [1, Σ new]: row after row
    positions: torch.Tensor  # [1, Σ new]: each row's own positions
    mask: torch.Tensor  # [1, 1, Σ new, Σ past + Σ new], additive: 0 where a query sees a key, the dtype's minimum elsewhere
    kv: KV  # [1, heads, Σ past, head_dim] per layer: the rows' cached KV, row after row
    last: torch.Tensor  # index of each row's last new token (its next-token logits)
    lengths: list[int]  # new tokens per row (per-row adapters are per token here)
    columns: list[torch.Tensor]  # each row's key columns (its cached, then its new keys) in the pass's cache


def pack(prompts: list[list[int]], past: list[int], ends: list[int], kvs: list[KV | None], *,
         dtype: torch.dtype, device: torch.device | str) -> Packed:
    """Rows that each have ``past[i]`` tokens in ``kvs[i]`` and prefill ``prompts[i][past[i]:ends[i]]``, as one pass.

    The new tokens are packed one row after the other (no padding: the linear layers see only real
    tokens) behind all rows' cached keys; a block-diagonal causal mask lets each token see its own row's
    cached keys and its row's new tokens up to itself, so each row gets the keys it would get alone.
    """
    new = [e - p for p, e in zip(past, ends)]
    n_past, n_new = sum(past), sum(new)
    sees = torch.zeros(n_new, n_past + n_new, dtype=torch.bool)
    ids, positions, columns = [], [], []
    p0 = q0 = 0
    for prompt, p, n in zip(prompts, past, new):
        ids += prompt[p : p + n]
        positions += range(p, p + n)
        sees[q0 : q0 + n, p0 : p0 + p] = True
        sees[q0 : q0 + n, n_past + q0 : n_past + q0 + n] = torch.ones(n, n, dtype=torch.bool).tril()
        columns.append(torch.cat([torch.arange(p0, p0 + p), torch.arange(n_past + q0, n_past + q0 + n)]).to(device))
        p0, q0 = p0 + p, q0 + n
    mask = torch.zeros(sees.shape, dtype=dtype).masked_fill_(~sees, torch.finfo(dtype).min)
    cached = [kv for kv in kvs if kv]
    layers: KV = [(torch.cat([kv[i][0] for kv in cached], dim=2), torch.cat([kv[i][1] for kv in cached], dim=2))
                  for i in range(len(cached[0]))] if cached else []
    last = torch.tensor(new).cumsum(0) - 1
    return Packed(torch.tensor([ids], device=device), torch.tensor([positions], device=device),
                  mask[None, None].to(device), layers, last.to(device), new, columns)


def unpack(kv: KV, packed: Packed) -> list[KV]:
    """Each row's own one-row KV (its cached and its new keys) from the cache of a :func:`pack` pass."""
    return [[(k.index_select(2, keep), v.index_select(2, keep)) for k, v in kv] for keep in packed.columns]
