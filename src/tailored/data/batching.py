"""Turn encoded examples into optimizer steps of micro-batches that waste little compute on padding.

Two strategies, both exact (no attention between examples, identical loss):

- ``bucket`` (default): each epoch is shuffled with the seed, cut into large chunks, sorted by length
  inside a chunk, and cut into steps of ``batch_size`` examples, so examples of one step have similar
  lengths. A step's examples are split over processes, then into micro-batches of at most
  ``micro_batch_tokens`` padded tokens each.
- ``pack``: a step's examples are concatenated into rows of at most ``max_seq_length`` tokens, with
  positions restarting at every example; transformers then builds a block-diagonal causal mask
  (``find_packed_sequence_indices``), so examples never see each other.

The plan depends only on (data, seed, epoch), so a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tailored.data.tokenize import IGNORE, Encoded


@dataclass
class MicroBatch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None  # None when packed
    position_ids: torch.Tensor | None
    n_examples: int

    @property
    def n_labels(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    @property
    def n_real_tokens(self) -> int:
        if self.attention_mask is None:
            return int(self.input_ids.numel())
        return int(self.attention_mask.sum())


def epoch_steps(
    lengths: list[int], batch_size: int, seed: int, epoch: int, *, chunk_steps: int = 16, min_size: int = 1
) -> list[list[int]]:
    """Example indices for each optimizer step of one epoch (length-grouped, deterministic).

    A trailing step smaller than ``min_size`` (the number of processes) is merged into the one before,
    so every process always has at least one example.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * chunk_steps
    steps: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        steps.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    if len(steps) > 1 and len(steps[-1]) < min_size:
        steps[-2].extend(steps.pop())
    rng.shuffle(steps)
    return steps


def shard(indices: list[int], lengths: list[int], rank: int, world: int) -> list[int]:
    """This process's share of a step's examples (balanced by tokens, deterministic)."""
    if world == 1:
        return indices
    ordered = sorted(indices, key=lambda i: (-lengths[i], i))
    return [idx for pos, idx in enumerate(ordered) if pos % world == rank]


def pad_rows(rows: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, labels, attention_mask)`` of ``rows`` right-padded to the longest one.

    Padding is ``pad_id`` in the ids, ``IGNORE`` in the labels (never a target) and 0 in the mask.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask[i, :n] = 1
    return ids, labels, mask


def _pad_batch(rows: list[Encoded], pad_id: int) -> MicroBatch:
    return MicroBatch(*pad_rows(rows, pad_id), None, len(rows))


def _pack_rows(rows: list[Encoded], max_len: int) -> list[MicroBatch]:
    out, cur_ids, cur_labels, cur_pos, count = [], [], [], [], 0
    for r in sorted(rows, key=len, reverse=True):
        if cur_ids and len(cur_ids) + len(r) > max_len:
            out.append(MicroBatch(torch.tensor([cur_ids]), torch.tensor([cur_labels]), None, torch.tensor([cur_pos]), count))
            cur_ids, cur_labels, cur_pos, count = [], [], [], 0
        cur_ids += r.input_ids
        # The first token of every example is never a target of the previous one.
        cur_labels += [IGNORE] + r.labels[1:] if cur_labels else r.labels
        cur_pos += list(range(len(r)))
        count += 1
    if cur_ids:
        out.append(MicroBatch(torch.tensor([cur_ids]), torch.tensor([cur_labels]), None, torch.tensor([cur_pos]), count))
    return out


def micro_batches(
    rows: list[Encoded], *, pad_id: int, micro_batch_tokens: int, strategy: str = "bucket", max_seq_length: int = 2048
) -> list[MicroBatch]:
    """Split one process's share of a step into micro-batches."""
    if not rows:
        return []
    if strategy == "pack":
        return _pack_rows(rows, max(max_seq_length, max(len(r) for r in rows)))
    rows = sorted(rows, key=len)
    out: list[MicroBatch] = []
    cur: list[Encoded] = []
    for r in rows:
        if cur and len(r) * (len(cur) + 1) > micro_batch_tokens:
            out.append(_pad_batch(cur, pad_id))
            cur = []
        cur.append(r)
    out.append(_pad_batch(cur, pad_id))
    return out
