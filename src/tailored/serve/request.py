"""A chat request on its way to the decode loop: checked and rendered, then split into rows.

:func:`prepare` renders the prompt with the model's chat template and checks it against the server's
limits, so that a request that cannot be served is answered with a 400 before anything is queued.
:class:`GenRequest` turns into one decode row per choice and reports its rows' text, finish reasons
and usage through ``on_event``.
"""

from __future__ import annotations

import random
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tailored.engine.constraints import ConstraintError, Grammar
from tailored.engine.constraints import compile as compile_constraint
from tailored.engine.logprobs import LogprobRecorder, openai_entries
from tailored.errors import TailoredError
from tailored.eval.generate import ChatModel, GenerationSettings
from tailored.serve.decode import Row, TextStream
from tailored.serve.registry import Entry
from tailored.serve.settings import ServeSettings

OnEvent = Callable[[str, Any], None]  # ("delta", (index, text, logprobs | None)) | ("finish", (index, reason)) | ("done", usage) | ("error", exc)


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


class ModelUnavailable(TailoredError):
    """The model's weights cannot be loaded (HTTP 500): its run folder is damaged or does not fit the base."""

    http_status, error_type, code = 500, "server_error", "model_unavailable"


SEED_RANGE = (-(2**63), 2**63 - 1)  # a request's seed: a signed 64-bit integer (as vLLM); choice i uses seed + i


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
    request_id: str = ""  # the HTTP request's x-request-id (logs; vLLM's request id)
    grammar: Grammar | None = None  # sampling.constraint compiled for this model's tokenizer
    _cancel_hooks: list[Callable[[], None]] = field(default_factory=list)

    @property
    def cost(self) -> int:
        return self.n * (len(self.prompt_ids) + self.sampling.max_new_tokens)

    def rows(self) -> list[Row]:
        """One decode row per choice; choice ``i`` samples with ``seed + i`` (a random seed without one).

        Seeds wrap modulo 2**64 (what ``torch.Generator.manual_seed`` takes), so no seed in
        :data:`SEED_RANGE` overflows for any choice.
        """
        s, rows = self.sampling, []
        for i in range(self.n):
            gen = None
            if s.temperature > 0:
                seed = (s.seed + i) % 2**64 if s.seed is not None else random.getrandbits(62)
                gen = torch.Generator().manual_seed(seed)
            stream = TextStream(self.chat.tokenizer, set() if s.ignore_eos else set(self.chat.stop_ids), s.stop)
            hooks = self._hooks()
            recorder = next((h for h in hooks if isinstance(h, LogprobRecorder)), None)
            rows.append(Row(self.prompt_ids, s, stream, self._emitter(i, stream, recorder), adapter=self.entry.adapter_name,
                            cancelled=self.cancelled.is_set, generator=gen, fail=self.fail, hooks=hooks))
        return rows

    def _hooks(self) -> list[Any]:
        """One row's logits hooks: the logprob recorder first (it sees the model's own distribution), then the grammar."""
        hooks: list[Any] = []
        if self.sampling.logprobs:
            hooks.append(LogprobRecorder(self.sampling.top_logprobs, set(self.chat.stop_ids)))
        if self.grammar is not None:
            hooks.append(self.grammar.start())
        return hooks

    def fail(self, exc: BaseException) -> None:
        """Report ``exc`` to the client, unless the request already finished; its other rows stop."""
        if not self.finished:
            self.finished = True
            self.cancelled.set()
            self.on_event("error", exc)

    def cancel(self) -> None:
        """The client has gone (or has its answer): its rows stop, and engines that asked (vLLM) are told."""
        if self.cancelled.is_set() and not self._cancel_hooks:
            return
        self.cancelled.set()
        hooks, self._cancel_hooks = self._cancel_hooks, []
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when :meth:`cancel` is called (at once if it already was)."""
        self._cancel_hooks.append(hook)
        if self.cancelled.is_set():
            self.cancel()

    def _emitter(self, index: int, stream: TextStream, recorder: LogprobRecorder | None = None) -> Callable[[str, str | None], None]:
        def emit(text: str, finish: str | None) -> None:
            logprobs = openai_entries(self.chat.tokenizer, recorder.take()) if recorder is not None else None
            if text or logprobs:
                self.on_event("delta", (index, text, logprobs))
            if finish is not None:
                self.completion_tokens += stream.count
                self.on_event("finish", (index, finish))
                self.remaining -= 1
                if self.remaining == 0:
                    self.finished = True
                    prompt = len(self.prompt_ids)
                    self.on_event("done", {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens,
                                           "total_tokens": prompt + self.completion_tokens})
        return emit


def label_constraint(entry: Entry) -> Any:
    """``constrain: "labels"``: the choice of the run's label set (a 400 for a model without one)."""
    from tailored.engine.constraints import Structure
    from tailored.eval.aftertrain import run_labels

    labels = run_labels(entry.manifest) if entry.manifest is not None else None
    if not labels:
        raise BadRequest(f"constrain: labels needs a classification run; {entry.id} has no label set", param="constrain")
    return Structure.choice(labels)


def prepare(entry: Entry, chat_model: Callable[[Entry], ChatModel], messages: list[dict[str, Any]],
            sampling: GenerationSettings, n: int, on_event: OnEvent, *, context: int, settings: ServeSettings) -> GenRequest:
    """Render the prompt with the template of ``chat_model(entry)`` and check the limits (raises :class:`BadRequest`).

    ``sampling.max_new_tokens`` None (the request named no limit) becomes the most that fits.
    """
    if entry.unsupported:
        raise BadRequest(entry.unsupported, param="model", code="model_not_supported")
    if sampling.seed is not None and not SEED_RANGE[0] <= sampling.seed <= SEED_RANGE[1]:
        raise BadRequest(f"seed {sampling.seed} is outside the signed 64-bit range [-2**63, 2**63 - 1]", param="seed")
    chat = chat_model(entry)
    chars = sum(len(str(m.get("content") or "")) + len(str(m.get("role") or "")) for m in messages)
    most = context * longest_token(chat.tokenizer)
    if chars > most:  # surely over the context, whatever the template: refused before rendering or tokenizing
        raise BadRequest(f"the messages have {chars} characters; at most {most} can fit in this model's context of "
                         f"{context} tokens", param="messages", code="context_length_exceeded")
    try:
        prompt = chat.prompt_ids(messages)
    except Exception as exc:  # jinja errors: the template rejects this conversation
        raise BadRequest(f"the chat template of {entry.id} cannot render these messages: {exc}", param="messages") from exc
    limit = settings.max_tokens
    room = context - len(prompt)
    if room < 1:
        raise BadRequest(f"the prompt has {len(prompt)} tokens; this model's context is {context}",
                         param="messages", code="context_length_exceeded")
    if sampling.max_new_tokens is None:
        sampling.max_new_tokens = min(limit, room)
    if sampling.max_new_tokens > limit:
        raise BadRequest(f"max_tokens is {sampling.max_new_tokens}; this server allows at most {limit}",
                         param="max_tokens", code="max_tokens_too_large")
    if sampling.max_new_tokens > room:
        raise BadRequest(f"prompt ({len(prompt)} tokens) + max_tokens ({sampling.max_new_tokens}) exceeds the "
                         f"context of {context}", param="max_tokens", code="context_length_exceeded")
    req = GenRequest(entry, prompt, sampling, n, on_event, chat, remaining=n)
    if sampling.constraint is not None:
        try:
            req.grammar = compile_constraint(sampling.constraint, chat.tokenizer, chat.stop_ids)
        except ConstraintError as exc:
            raise BadRequest(exc.message, param="response_format", code="invalid_response_format") from None
    if n > settings.max_batch or req.cost > settings.max_batch_tokens:
        raise BadRequest(f"n × (prompt + max_tokens) = {req.cost} tokens is more than one batch holds "
                         f"({settings.max_batch} rows, {settings.max_batch_tokens} tokens)", param="n")
    return req


_LONGEST: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def longest_token(tokenizer: Any) -> int:
    """The most characters one token of ``tokenizer`` can stand for (its vocabulary's longest entry, once per tokenizer).

    A vocabulary entry is at least as long as the text it decodes to (byte-level BPE: one character per
    byte; SentencePiece: ``▁`` for the space), so a text of more than ``context × longest_token``
    characters is more than ``context`` tokens.
    """
    try:
        return _LONGEST[tokenizer]
    except (KeyError, TypeError):
        pass
    longest = max((len(t) for t in tokenizer.get_vocab()), default=1)
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    longest = max([longest, *(len(str(t)) for t in added.values())])
    try:
        _LONGEST[tokenizer] = longest
    except TypeError:
        pass
    return longest
