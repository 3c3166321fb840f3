"""The built-in batching engine: one base model in memory, LoRA adapters beside it, one scheduler.

Requests are checked and rendered (:mod:`~tailored.serve.request`), queued (bounded) and batched by
:mod:`~tailored.serve.scheduler`: every queued request that can share the model runs in ONE batch --
requests for different adapters and for the base included (per-row LoRA through
:mod:`tailored.engine.lora`). Adapters are loaded on first use and the least recently used are
unloaded beyond ``max_adapters``. Runs that are not plain LoRA on this base (full fine-tunes, DoRA, IA3,
QLoRA, other bases) are loaded whole with ``load_run`` and batched among their own requests
(:mod:`~tailored.serve.models_cache`). Memory is bounded: at most ``max_batch`` rows and
``max_batch_tokens`` of prompt + completion per batch, and at most ``queue_size`` waiting requests.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tailored.eval.generate import GenerationSettings
from tailored.models.load import load_model, load_tokenizer
from tailored.serve import request
from tailored.serve.decode import run_batch
from tailored.engine.lora import LoraBank
from tailored.serve.models_cache import ChatModels, ResidentAdapters, StandaloneModels
from tailored.serve.registry import BASE_ADAPTER, Entry, Registry
from tailored.serve.request import (
    BadRequest,
    GenerationFailed,
    GenRequest,
    ModelUnavailable,
    OnEvent,
    Overloaded,
)
from tailored.serve.scheduler import Scheduler
from tailored.serve.settings import ServeSettings

__all__ = ["BadRequest", "Engine", "GenRequest", "GenerationFailed", "ModelUnavailable", "OnEvent", "Overloaded",
           "pick_device"]
log = logging.getLogger("tailored.serve")


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
        """Decode one batch (on the scheduler thread): a standalone model's, or the shared base's.

        A request whose model cannot be loaded fails alone (and its run is marked unavailable); the rest
        of the batch is decoded.
        """
        if batch[0].entry.kind == "standalone":
            try:
                chat = self.standalone.get(batch[0].entry)
            except Exception as exc:  # noqa: BLE001 - every request here asked for that model
                unavailable = self._unavailable(batch[0].entry, exc)
                for req in batch:
                    req.fail(unavailable)
                return
            rows = self._rows(batch)
            if rows:
                self.scheduler.count(len(rows), mixed=False)
                self.stats["tokens"] += run_batch(chat.model, rows, int(chat.tokenizer.pad_token_id), stats=self.stats)
            return
        names = {req.entry.adapter_name for req in batch}
        ready = []
        for req in batch:
            try:
                if req.entry.kind == "adapter":
                    self.adapters.ensure(req.entry, keep=names)
                ready.append(req)
            except Exception as exc:  # noqa: BLE001 - this adapter's failure is its requests' alone
                req.fail(self._unavailable(req.entry, exc))
        rows = self._rows(ready)
        if not rows:
            return
        used = {r.adapter for r in rows}
        pad = int(self.base_tokenizer.pad_token_id)
        self.scheduler.count(len(rows), mixed=len(used) > 1)
        if used == {BASE_ADAPTER}:
            n = run_batch(self.base_model, rows, pad, stats=self.stats)
        else:  # one or several adapters: concatenated LoRA matrices, row-masked (see lora_bank.py)
            with self.bank.rows([r.adapter for r in rows]) as mixer:
                n = run_batch(self.base_model, rows, pad, mixer=mixer, stats=self.stats)
        self.stats["tokens"] += n

    def _rows(self, batch: list[GenRequest]) -> list[Any]:
        """The decode rows of every request that can make them (one that cannot fails alone)."""
        rows = []
        for req in batch:
            try:
                rows += req.rows()
            except Exception as exc:  # noqa: BLE001 - reported to that request only
                req.fail(exc)
        return rows

    def _unavailable(self, entry: Entry, exc: BaseException) -> ModelUnavailable:
        """The error a request for a model that failed to load gets; the registry stops offering the model."""
        reason = self.registry.mark_unavailable(entry, exc)
        log.error("cannot load %s: %s", entry.id, reason, exc_info=exc)
        where = f"run folder {entry.run_dir.name}: " if entry.run_dir is not None else ""
        return ModelUnavailable(f"The model `{entry.id}` is unavailable: {where}{reason}")
