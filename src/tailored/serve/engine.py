"""The built-in batching engine: one base model in memory, LoRA adapters beside it, one scheduler.

Requests are checked and rendered (:mod:`~tailored.serve.request`), queued (bounded) and batched by
:mod:`~tailored.serve.scheduler`: every queued request that can share the model runs in ONE batch --
requests for different adapters and for the base included (per-row LoRA through
:mod:`tailored.serve.lora_bank`). Adapters are loaded on first use and the least recently used are
unloaded beyond ``max_adapters``. Runs that are not plain LoRA on this base (full fine-tunes, DoRA, IA3,
QLoRA, other bases) are loaded whole with ``load_run`` and batched among their own requests
(:mod:`~tailored.serve.models_cache`). Memory is bounded: at most ``max_batch`` rows and
``max_batch_tokens`` of prompt + completion per batch, and at most ``queue_size`` waiting requests.
"""

from __future__ import annotations

from typing import Any

import torch

from tailored.eval.generate import GenerationSettings
from tailored.models.load import load_model, load_tokenizer
from tailored.serve import request
from tailored.serve.decode import run_batch
from tailored.serve.lora_bank import LoraBank
from tailored.serve.models_cache import ChatModels, ResidentAdapters, StandaloneModels
from tailored.serve.registry import BASE_ADAPTER, Entry, Registry
from tailored.serve.request import (
    BadRequest,
    GenerationFailed,
    GenRequest,
    OnEvent,
    Overloaded,
)
from tailored.serve.scheduler import Scheduler
from tailored.serve.settings import ServeSettings

__all__ = ["BadRequest", "Engine", "GenRequest", "GenerationFailed", "OnEvent", "Overloaded", "pick_device"]


def pick_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class Engine:
    """Serve the registry's models. Thread-safe: ``prepare`` and ``submit`` may be called from any thread."""

    def __init__(self, registry: Registry, settings: ServeSettings) -> None:
        self.registry, self.settings = registry, settings
        self.device = pick_device(settings.device)
        self.base_model = load_model(registry.base_folder, device=self.device).eval()
        self.base_tokenizer = load_tokenizer(registry.base_folder)
        self.context = int(getattr(self.base_model.config, "max_position_embeddings", 2048) or 2048)
        self.bank = LoraBank(self.base_model)  # LoRA adapters as tensors beside the untouched base
        self.chats = ChatModels(self.base_model, self.base_tokenizer)
        self.adapters = ResidentAdapters(self.bank, settings.max_adapters)
        self.standalone = StandaloneModels(settings.max_standalone, self.device)
        self.scheduler = Scheduler(settings, self._run)
        self.stats = self.scheduler.stats

    def prepare(self, entry: Entry, messages: list[dict[str, Any]], sampling: GenerationSettings, n: int,
                on_event: OnEvent) -> GenRequest:
        """Render the prompt with the model's template and check the limits (raises :class:`BadRequest`)."""
        return request.prepare(entry, self.chats.get, messages, sampling, n, on_event, context=self.context,
                               settings=self.settings)

    def submit(self, req: GenRequest) -> None:
        """Queue a prepared request (raises :class:`Overloaded` when the queue is full)."""
        self.scheduler.submit(req)

    def close(self) -> None:
        self.scheduler.close()

    def _run(self, batch: list[GenRequest]) -> None:
        """Decode one batch (on the scheduler thread): a standalone model's, or the shared base's."""
        rows = [row for req in batch for row in req.rows()]
        if batch[0].entry.kind == "standalone":
            chat = self.standalone.get(batch[0].entry)
            self.scheduler.count(len(rows), mixed=False)
            self.stats["tokens"] += run_batch(chat.model, rows, int(chat.tokenizer.pad_token_id))
            return
        names = {req.entry.adapter_name for req in batch}
        for req in batch:
            if req.entry.kind == "adapter":
                self.adapters.ensure(req.entry, keep=names)
        pad = int(self.base_tokenizer.pad_token_id)
        self.scheduler.count(len(rows), mixed=len(names) > 1)
        if names == {BASE_ADAPTER}:
            n = run_batch(self.base_model, rows, pad)
        else:  # one or several adapters: concatenated LoRA matrices, row-masked (see lora_bank.py)
            with self.bank.rows([r.adapter for r in rows]) as mixer:
                n = run_batch(self.base_model, rows, pad, mixer=mixer)
        self.stats["tokens"] += n
