"""Prefix caching: KV blocks of prompt prefixes reused across requests, bounded in memory, least recently used dropped.

A block is the keys and values of ``block`` prompt tokens at fixed positions ``[b·block, (b+1)·block)``,
stored under its namespace (the model and adapter that computed it: a LoRA on k/v changes them, and a
reloaded adapter gets a new version) and the whole token prefix it ends (so a hit is exact, never a hash
collision). A prompt reuses its longest run of cached blocks from the start. Blocks of a chain are
touched deepest first, so a prefix is always more recent than its extensions and eviction drops leaves
first. The engine prefills in chunks of exactly ``block`` tokens at the same boundaries, so a cached
block holds the very tensors an uncached prefill computes: answers are identical with or without it.
"""

from __future__ import annotations

import collections
import threading

import torch

from tailored.engine.kv import KV


class PrefixCache:
    """KV blocks per (namespace, token prefix), at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int, block: int = 64) -> None:
        self.max_bytes, self.block = max_bytes, block
        self._blocks: collections.OrderedDict[tuple[str, tuple[int, ...]], tuple[KV, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.stats = {"prefix_lookups": 0, "prefix_hit_tokens": 0, "prefix_evicted_blocks": 0}

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, namespace: str, ids: list[int], limit: int) -> tuple[int, KV | None]:
        """(tokens reused, their KV) for the longest cached prefix of ``ids`` of at most ``limit`` tokens."""
        with self._lock:
            self.stats["prefix_lookups"] += 1
            found = []
            for b in range(limit // self.block):
                key = (namespace, tuple(ids[: (b + 1) * self.block]))
                if key not in self._blocks:
                    break
                found.append(key)
            if not found:
                return 0, None
            for key in reversed(found):
                self._blocks.move_to_end(key)
            blocks = [self._blocks[key][0] for key in found]
            self.stats["prefix_hit_tokens"] += len(found) * self.block
        kv = [(torch.cat([blk[i][0] for blk in blocks], dim=2), torch.cat([blk[i][1] for blk in blocks], dim=2))
              for i in range(len(blocks[0]))]
        return len(found) * self.block, kv

    def store(self, namespace: str, ids: list[int], kv: KV, upto: int) -> None:
        """Add the blocks of ``ids[:upto]`` not cached yet, from a one-row ``kv`` holding at least ``upto`` tokens."""
        n = self.block
        with self._lock:
            chain = []
            for b in range(upto // n):
                key = (namespace, tuple(ids[: (b + 1) * n]))
                chain.append(key)
                if key in self._blocks:
                    continue
                blk = [(k[:, :, b * n : (b + 1) * n].clone(), v[:, :, b * n : (b + 1) * n].clone()) for k, v in kv]
                size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in blk)
                if size > self.max_bytes:
                    return
                self._blocks[key] = (blk, size)
                self.bytes += size
            for key in reversed(chain):
                self._blocks.move_to_end(key)
            while self.bytes > self.max_bytes and self._blocks:
                _, (_, size) = self._blocks.popitem(last=False)
                self.bytes -= size
                self.stats["prefix_evicted_blocks"] += 1
