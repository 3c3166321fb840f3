"""The built-in batching engine: one base model in memory, LoRA adapters beside it, one scheduler.

Requests are queued (bounded); a scheduler thread waits a few milliseconds to collect them, then runs
every queued request that can share the model in ONE batch -- requests for different adapters and
for the base included (per-row LoRA through :mod:`tailored.serve.lora_bank`). Adapters are loaded on
first use and the least recently used are unloaded beyond ``max_adapters``. Runs that are not plain
LoRA on this base (full fine-tunes, DoRA, IA3, QLoRA, other bases) are loaded whole with ``load_run``
and batched among their own requests. Memory is bounded: at most ``max_batch`` rows and
``max_batch_tokens`` of prompt + completion per batch, and at most ``queue_size`` waiting requests.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tailored.config.manifest import RunFolder
from tailored.errors import TailoredError
from tailored.eval.generate import ChatModel, GenerationSettings
from tailored.methods.runs import run_tokenizer
from tailored.models.load import load_model, load_tokenizer
from tailored.serve.decode import Row, TextStream, run_batch
from tailored.serve.lora_bank import LoraBank
from tailored.serve.registry import BASE_ADAPTER, Entry, Registry
from tailored.serve.settings import ServeSettings

log = logging.getLogger("tailored.serve")
OnEvent = Callable[[str, Any], None]  # ("delta", (index, text)) | ("finish", (index, reason)) | ("done", usage) | ("error", exc)


class BadRequest(TailoredError):
    """The request cannot be served as given (HTTP 400)."""

    http_status, error_type, code = 400, "invalid_request_error", None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.code = param, code


class Overloaded(TailoredError):
    """The queue is full (HTTP 429, retry later)."""

    http_status, error_type, code = 429, "rate_limit_error", "queue_full"


class GenerationFailed(TailoredError):
    """The model failed while generating (HTTP 500); the message names the cause."""

    http_status, error_type, code = 500, "server_error", None


@dataclass
class GenRequest:
    """A chat request, rendered and validated, waiting for the scheduler."""

    entry: Entry
    prompt_ids: list[int]
    sampling: GenerationSettings
    n: int
    on_event: OnEvent
    chat: ChatModel  # tokenizer with the run's template, and its stop tokens
    cancelled: threading.Event = field(default_factory=threading.Event)
    remaining: int = 0
    completion_tokens: int = 0
    finished: bool = False

    @property
    def cost(self) -> int:
        return self.n * (len(self.prompt_ids) + self.sampling.max_new_tokens)


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
        self._resident: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._standalone: collections.OrderedDict[str, ChatModel] = collections.OrderedDict()
        self._chats: dict[str, ChatModel] = {}
        self._pending: collections.deque[GenRequest] = collections.deque()
        self._cond = threading.Condition()
        self._chat_lock = threading.Lock()
        self._stop = False
        self.stats = {"batches": 0, "rows": 0, "max_rows": 0, "mixed_batches": 0, "tokens": 0}
        self._thread = threading.Thread(target=self._loop, name="tailored-scheduler", daemon=True)
        self._thread.start()

    # ---- request side -------------------------------------------------------------------------
    def chat_model(self, entry: Entry) -> ChatModel:
        """The tokenizer (with the run's training chat template) and stop tokens for ``entry``."""
        with self._chat_lock:
            if entry.id not in self._chats:
                tokenizer = self.base_tokenizer
                if entry.run_dir is not None:  # the run's tokenizer with its training template, always
                    tokenizer = run_tokenizer(RunFolder(entry.run_dir), entry.manifest)
                self._chats[entry.id] = ChatModel(self.base_model, tokenizer, entry.manifest, name=entry.id)
            return self._chats[entry.id]

    def prepare(self, entry: Entry, messages: list[dict[str, Any]], sampling: GenerationSettings, n: int,
                on_event: OnEvent) -> GenRequest:
        """Render the prompt with the model's template and check the limits (raises :class:`BadRequest`)."""
        if entry.unsupported:
            raise BadRequest(entry.unsupported, param="model", code="model_not_supported")
        chat = self.chat_model(entry)
        try:
            prompt = chat.prompt_ids(messages)
        except Exception as exc:  # jinja errors: the template rejects this conversation
            raise BadRequest(f"the chat template of {entry.id} cannot render these messages: {exc}", param="messages") from exc
        limit = self.settings.max_tokens
        room = self.context - len(prompt)
        if room < 1:
            raise BadRequest(f"the prompt has {len(prompt)} tokens; this model's context is {self.context}",
                             param="messages", code="context_length_exceeded")
        if sampling.max_new_tokens is None:
            sampling.max_new_tokens = min(limit, room)
        if sampling.max_new_tokens > limit:
            raise BadRequest(f"max_tokens is {sampling.max_new_tokens}; this server allows at most {limit}",
                             param="max_tokens", code="max_tokens_too_large")
        if sampling.max_new_tokens > room:
            raise BadRequest(f"prompt ({len(prompt)} tokens) + max_tokens ({sampling.max_new_tokens}) exceeds the "
                             f"context of {self.context}", param="max_tokens", code="context_length_exceeded")
        req = GenRequest(entry, prompt, sampling, n, on_event, chat, remaining=n)
        if n > self.settings.max_batch or req.cost > self.settings.max_batch_tokens:
            raise BadRequest(f"n × (prompt + max_tokens) = {req.cost} tokens is more than one batch holds "
                             f"({self.settings.max_batch} rows, {self.settings.max_batch_tokens} tokens)", param="n")
        return req

    def submit(self, req: GenRequest) -> None:
        """Queue a prepared request (raises :class:`Overloaded` when the queue is full)."""
        with self._cond:
            if len(self._pending) >= self.settings.queue_size:
                raise Overloaded(f"the server is busy ({len(self._pending)} requests waiting)", hint="retry shortly")
            self._pending.append(req)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # ---- scheduler side -----------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
                while len(self._pending) < self.settings.max_batch and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._take_batch()
            if batch:
                self._run(batch)

    def _take_batch(self) -> list[GenRequest]:
        """The oldest request plus every queued request that fits with it (same group, within the bounds)."""
        group = self._pending[0].entry.group
        batch: list[GenRequest] = []
        rows = cost = 0
        adapters: set[str] = set()
        for req in list(self._pending):
            if req.cancelled.is_set():
                self._pending.remove(req)
                continue
            if req.entry.group != group:
                continue
            new_adapters = adapters | ({req.entry.adapter_name} if req.entry.kind == "adapter" else set())
            if batch and (rows + req.n > self.settings.max_batch or cost + req.cost > self.settings.max_batch_tokens
                          or len(new_adapters) > self.settings.max_adapters):
                break
            batch.append(req)
            self._pending.remove(req)
            rows, cost, adapters = rows + req.n, cost + req.cost, new_adapters
        return batch

    def _run(self, batch: list[GenRequest]) -> None:
        try:
            if batch[0].entry.kind == "standalone":
                chat = self._standalone_model(batch[0].entry)
                rows = self._rows(batch)
                self._count(rows, mixed=False)
                self.stats["tokens"] += run_batch(chat.model, rows, int(chat.tokenizer.pad_token_id))
            else:
                self._run_shared(batch)
        except Exception as exc:  # report to every waiting client; the server keeps running
            log.exception("batch failed")
            for req in batch:
                if not req.finished:
                    req.finished = True
                    req.on_event("error", exc)

    def _run_shared(self, batch: list[GenRequest]) -> None:
        names = {req.entry.adapter_name for req in batch}
        for req in batch:
            if req.entry.kind == "adapter":
                self._ensure_adapter(req.entry, keep=names)
        rows = self._rows(batch)
        pad = int(self.base_tokenizer.pad_token_id)
        self._count(rows, mixed=len(names) > 1)  # before running: clients may read stats as soon as they are answered
        if names == {BASE_ADAPTER}:
            n = run_batch(self.base_model, rows, pad)
        else:  # one or several adapters: concatenated LoRA matrices, row-masked (see lora_bank.py)
            with self.bank.rows([r.adapter for r in rows]) as mixer:
                n = run_batch(self.base_model, rows, pad, mixer=mixer)
        self.stats["tokens"] += n

    def _count(self, rows: list[Row], *, mixed: bool) -> None:
        s = self.stats
        s["batches"] += 1
        s["rows"] += len(rows)
        s["max_rows"] = max(s["max_rows"], len(rows))
        s["mixed_batches"] += int(mixed)

    def _rows(self, batch: list[GenRequest]) -> list[Row]:
        rows = []
        for req in batch:
            s = req.sampling
            for i in range(req.n):
                gen = None
                if s.temperature > 0:
                    gen = torch.Generator().manual_seed(s.seed + i if s.seed is not None else random.getrandbits(62))
                stream = TextStream(req.chat.tokenizer, set() if s.ignore_eos else set(req.chat.stop_ids), s.stop)
                rows.append(Row(req.prompt_ids, s, stream, self._emitter(req, i, stream), adapter=req.entry.adapter_name,
                                cancelled=req.cancelled.is_set, generator=gen))
        return rows

    @staticmethod
    def _emitter(req: GenRequest, index: int, stream: TextStream) -> Callable[[str, str | None], None]:
        def emit(text: str, finish: str | None) -> None:
            if text:
                req.on_event("delta", (index, text))
            if finish is not None:
                req.completion_tokens += stream.count
                req.on_event("finish", (index, finish))
                req.remaining -= 1
                if req.remaining == 0:
                    req.finished = True
                    prompt = len(req.prompt_ids)
                    req.on_event("done", {"prompt_tokens": prompt, "completion_tokens": req.completion_tokens,
                                          "total_tokens": prompt + req.completion_tokens})
        return emit

    def _ensure_adapter(self, entry: Entry, keep: set[str]) -> None:
        name = entry.adapter_name
        if name in self._resident:
            self._resident.move_to_end(name)
            return
        start = time.monotonic()
        self.bank.load(name, RunFolder(entry.run_dir).final)  # type: ignore[arg-type]
        self._resident[name] = None
        log.info("loaded adapter %s (%s) in %.2fs", entry.id, name, time.monotonic() - start)
        for old in list(self._resident):
            if len(self._resident) <= self.settings.max_adapters:
                break
            if old not in keep:
                self.bank.unload(old)
                del self._resident[old]
                log.info("unloaded adapter %s", old)

    def _standalone_model(self, entry: Entry) -> ChatModel:
        if entry.id in self._standalone:
            self._standalone.move_to_end(entry.id)
            return self._standalone[entry.id]
        from tailored.methods.runs import load_run

        while len(self._standalone) >= self.settings.max_standalone:
            self._standalone.popitem(last=False)
        model, tok, manifest = load_run(entry.run_dir, device=self.device)  # type: ignore[arg-type]
        self._standalone[entry.id] = ChatModel(model, tok, manifest, name=entry.id)
        return self._standalone[entry.id]
