"""What the engine keeps loaded per model id: chat templates, resident LoRA adapters, standalone models.

* :class:`ChatModels` -- each entry's tokenizer with the chat template it was trained with, and its stop
  tokens (built once per id; used on the request side, from any thread).
* :class:`ResidentAdapters` -- which LoRA adapters are in the :class:`~tailored.engine.lora.LoraBank`;
  loaded on first use, the least recently used unloaded beyond ``max_adapters`` (never one the batch uses).
* :class:`StandaloneModels` -- runs loaded whole with ``load_run``, at most ``max_standalone`` at once.

The two LRU caches are used from the scheduler thread only.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Container
from typing import Any, Generic, TypeVar

import torch

from tailored.config.manifest import RunFolder
from tailored.eval.generate import ChatModel
from tailored.methods.runs import load_run, run_neighbours, run_tokenizer
from tailored.engine.lora import LoraBank
from tailored.serve.registry import Entry

log = logging.getLogger("tailored.serve")
V = TypeVar("V")


class LRU(Generic[V]):
    """An ordered map whose oldest-used entries are dropped beyond ``capacity`` (``on_drop`` is told)."""

    def __init__(self, capacity: int, on_drop: Callable[[str, V], None] = lambda key, value: None) -> None:
        self.capacity, self.on_drop = capacity, on_drop
        self._items: collections.OrderedDict[str, V] = collections.OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def use(self, key: str) -> V:
        """The value of ``key``, now the most recently used."""
        self._items.move_to_end(key)
        return self._items[key]

    def add(self, key: str, value: V) -> None:
        self._items[key] = value

    def shrink(self, size: int, keep: Container[str] = ()) -> None:
        """Drop the least recently used until at most ``size`` remain, sparing ``keep``."""
        for key in list(self._items):
            if len(self._items) <= size:
                break
            if key not in keep:
                self.on_drop(key, self._items.pop(key))


class ChatModels:
    """The tokenizer (with the run's training chat template) and stop tokens for each entry, built once."""

    def __init__(self, model: Any, base_tokenizer: Any) -> None:
        self.model, self.base_tokenizer = model, base_tokenizer
        self._chats: dict[str, ChatModel] = {}
        self._lock = threading.Lock()

    def get(self, entry: Entry) -> ChatModel:
        with self._lock:
            if entry.id not in self._chats:
                tokenizer, near = self.base_tokenizer, None
                if entry.run_dir is not None:  # the run's tokenizer with its training template, always (and its listing)
                    tokenizer = run_tokenizer(RunFolder(entry.run_dir), entry.manifest)
                    near = run_neighbours(RunFolder(entry.run_dir), entry.manifest)
                self._chats[entry.id] = ChatModel(self.model, tokenizer, entry.manifest, name=entry.id, neighbours=near)
            return self._chats[entry.id]


class ResidentAdapters:
    """The LoRA adapters loaded into ``bank``, at most ``capacity`` beyond those one batch needs."""

    def __init__(self, bank: LoraBank, capacity: int) -> None:
        self.bank = bank
        self._lru: LRU[None] = LRU(capacity, on_drop=self._unload)

    def ensure(self, entry: Entry, keep: set[str]) -> None:
        """Load ``entry``'s adapter unless resident; then unload the least recently used not in ``keep``."""
        name = entry.adapter_name
        if name in self._lru:
            self._lru.use(name)
            return
        start = time.monotonic()
        self.bank.load(name, entry.weights)
        self._lru.add(name, None)
        log.info("loaded adapter %s (%s) in %.2fs", entry.id, name, time.monotonic() - start)
        self._lru.shrink(self._lru.capacity, keep=keep)

    def _unload(self, name: str, _: None) -> None:
        self.bank.unload(name)
        log.info("unloaded adapter %s", name)


class StandaloneModels:
    """Runs that are not plain LoRA on the base, loaded whole; the least recently used is dropped first."""

    def __init__(self, capacity: int, device: str | torch.device) -> None:
        self.device = device
        self._lru: LRU[ChatModel] = LRU(capacity)

    def resident(self, model_id: str) -> bool:
        return model_id in self._lru

    def get(self, entry: Entry, keep: Container[str] = ()) -> ChatModel:
        """``entry``'s model, loaded unless resident; to make room the least recently used not in ``keep`` go."""
        if entry.id in self._lru:
            return self._lru.use(entry.id)
        self._lru.shrink(self._lru.capacity - 1, keep=keep)  # make room before loading: one model's memory at a time
        model, tok, manifest = load_run(entry.run_dir, which=entry.which, device=self.device,  # type: ignore[arg-type]
                                        merged=True)  # mergeable methods run at the base's cost
        chat = ChatModel(model, tok, manifest, name=entry.id, neighbours=run_neighbours(RunFolder(entry.run_dir), manifest))
        self._lru.add(entry.id, chat)
        return chat
