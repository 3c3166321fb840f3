"""The built-in engine: one base model in memory, LoRA adapters beside it, one scheduler thread.

Requests are checked and rendered (:mod:`~tailored.serve.request`) and queued (bounded). With
``batching: continuous`` (the default) :mod:`~tailored.serve.continuous` hands each request to a
:class:`~tailored.engine.core.StepEngine`: the shared base's (requests for different adapters and for
the base decode together, per-row LoRA through :mod:`tailored.engine.lora`), or a standalone model's;
rows join the running batch at the next step, share prompt prefixes through one
:class:`~tailored.engine.prefix.PrefixCache`, and leave when done. With ``batching: static``
:mod:`~tailored.serve.scheduler` runs each batch to its end (:mod:`~tailored.serve.decode`; the
benchmark's reference, and the fallback for a base the step engine cannot run). Adapters are loaded on
first use and the least recently used are unloaded beyond ``max_adapters``. Runs that are not plain
LoRA on this base (full fine-tunes, DoRA, IA3, QLoRA, other bases) are loaded whole with ``load_run``
(:mod:`~tailored.serve.models_cache`). Memory is bounded: at most ``max_batch`` rows and
``max_batch_tokens`` of prompt + completion decoding at once, ``prefix_cache_mb`` of cached prefixes,
and at most ``queue_size`` waiting requests.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tailored.engine.core import StepEngine
from tailored.engine.kv import engine_problem
from tailored.engine.lora import LoraBank
from tailored.engine.prefix import PrefixCache
from tailored.eval.generate import GenerationSettings
from tailored.models.load import load_model, load_tokenizer
from tailored.serve import request
from tailored.serve.decode import run_batch
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
from tailored.serve.continuous import ContinuousScheduler
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
        self.prefix = PrefixCache(settings.prefix_cache_mb * 2**20, block=settings.prefill_chunk) \
            if settings.prefix_cache_mb else None
        self.problem = engine_problem(self.base_model)
        if settings.batching == "static" or self.problem:
            if settings.batching == "continuous":
                log.warning("static batching: the step engine cannot run this base (%s)", self.problem)
            self.scheduler: Scheduler | ContinuousScheduler = Scheduler(settings, self._run)
            self.stats = self.scheduler.stats
            return
        self.stats: dict[str, Any] = {}
        self.lane = self._engine(self.base_model, "base", self.bank)
        self.lanes: dict[str, StepEngine] = {}  # standalone models' engines, by model id
        self.scheduler = ContinuousScheduler(settings, self._place, self._engines, self.stats)

    def _engine(self, model: torch.nn.Module, namespace: str, bank: LoraBank | None = None) -> StepEngine:
        s = self.settings
        return StepEngine(model, bank=bank, prefix=self.prefix, namespace=namespace, max_rows=s.max_batch,
                          max_tokens=s.max_batch_tokens, chunk=s.prefill_chunk, prefill_budget=4 * s.prefill_chunk,
                          stats=self.stats)

    def _engines(self) -> list[StepEngine]:
        return [self.lane, *self.lanes.values()]

    def _place(self, req: GenRequest) -> bool:
        """Hand ``req``'s rows to its step engine (on the scheduler thread); False: wait, its model cannot load yet."""
        entry = req.entry
        if entry.kind == "standalone":
            lane = self.lanes.get(entry.id)
            if lane is None:
                busy = {key for key, other in self.lanes.items() if other.busy}
                if len(busy) >= self.settings.max_standalone:
                    return False
                try:
                    chat = self.standalone.get(entry, keep=busy)
                except Exception as exc:  # noqa: BLE001 - every request for it fails, the rest are served
                    req.fail(self._unavailable(entry, exc))
                    return True
                self.lanes = {key: other for key, other in self.lanes.items() if self.standalone.resident(key)}
                problem = engine_problem(chat.model)
                if problem:
                    req.fail(ModelUnavailable(f"The model `{entry.id}` cannot be served here: {problem}"))
                    return True
                lane = self.lanes[entry.id] = self._engine(chat.model, entry.id)
            else:
                self.standalone.get(entry)  # now the most recently used
        else:
            lane = self.lane
            if entry.kind == "adapter":
                try:
                    self.adapters.ensure(entry, keep=lane.adapters() | {entry.adapter_name})
                except Exception as exc:  # noqa: BLE001 - this adapter's failure is its requests' alone
                    req.fail(self._unavailable(entry, exc))
                    return True
        lane.add(req.rows())
        return True

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
        """``batching: static``: decode one batch (on the scheduler thread), a standalone model's or the shared base's.

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
        else:  # one or several adapters: concatenated LoRA matrices, row-masked (see engine/lora.py)
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
