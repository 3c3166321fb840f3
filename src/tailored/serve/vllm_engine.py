"""``--engine vllm``: the same models through vLLM's multi-LoRA engine (CUDA machines with vLLM).

Structured outputs and logprobs are passed to vLLM in its own terms (:mod:`~tailored.serve.vllm_params`).
Kept small on purpose: it offers the built-in engine's ``prepare``/``submit``/``close`` interface and
forwards to ``vllm.AsyncLLMEngine`` (in vLLM v1 an alias of ``AsyncLLM``) with one ``LoRARequest`` per
adapter run, and ``abort(request_id)`` when a client leaves. Runs that are not LoRA on the served base
are refused. vLLM itself is not exercised in this repository's tests (it needs CUDA); a small stand-in
engine tests the forwarding and the abort.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import threading
from typing import Any

from tailored.errors import ModelError
from tailored.models.load import load_tokenizer
from tailored.serve import request
from tailored.serve.models_cache import ChatModels
from tailored.serve.registry import Entry, Registry
from tailored.serve.request import BadRequest, GenRequest
from tailored.serve.settings import ServeSettings
from tailored.serve.vllm_params import new_logprobs, sampling_params


def require_vllm() -> Any:
    if importlib.util.find_spec("vllm") is None:
        raise ModelError(
            "--engine vllm needs the 'vllm' package, which is not installed",
            hint="on a CUDA machine: pip install vllm; on CPU use the built-in engine (--engine builtin, the default)",
        )
    import vllm

    return vllm


class VllmEngine:
    """Serve the registry through vLLM (``enable_lora``; ``max_loras`` = ``--max-adapters``).

    Args:
        registry, settings: as for the built-in engine.
        engine: an engine with vLLM's ``generate(prompt, params, request_id, lora_request=)`` and
            ``abort(request_id)`` (default: ``vllm.AsyncLLMEngine`` built from ``settings``).
        api: where ``SamplingParams``, ``TokensPrompt`` and ``LoRARequest`` come from (default: vLLM's).
        context: the model's context length (default: vLLM's ``max_model_len``).

    A client that disconnects cancels its request: the task reading vLLM's output is cancelled and
    ``engine.abort(request_id)`` is awaited, so vLLM stops generating for it and frees its KV cache.
    """

    def __init__(self, registry: Registry, settings: ServeSettings, *, engine: Any = None, api: Any = None,
                 context: int | None = None) -> None:
        self.registry, self.settings, self.stats = registry, settings, {"aborted": 0}
        self.chats = ChatModels(_NoModel(), load_tokenizer(registry.base_folder))
        self._lora_ids: dict[str, int] = {}
        self._ids = itertools.count(1)
        if engine is None:
            vllm = require_vllm()
            from vllm.engine.arg_utils import AsyncEngineArgs

            args = AsyncEngineArgs(model=str(registry.base_folder), enable_lora=True, max_loras=settings.max_adapters,
                                   max_lora_rank=64, max_num_seqs=settings.max_batch)
            engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self.engine, self.api = engine, api or _vllm_api()
        self.context = context or _max_model_len(engine)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="tailored-vllm", daemon=True).start()

    def prepare(self, entry: Entry, messages: list[dict[str, Any]], sampling: Any, n: int, on_event: Any) -> GenRequest:
        """The built-in engine's checks (context, max_tokens, seed, size) with vLLM's context length."""
        if entry.kind == "standalone":
            raise BadRequest(f"{entry.id} is not a LoRA run on the served base; --engine vllm serves LoRA adapters only",
                             param="model", code="model_not_supported")
        return request.prepare(entry, self.chats.get, messages, sampling, n, on_event, context=self.context,
                               settings=self.settings)

    def submit(self, req: GenRequest) -> None:
        request_id = req.request_id or f"r{next(self._ids)}"
        future = asyncio.run_coroutine_threadsafe(self._generate(req, request_id), self.loop)
        req.on_cancel(lambda: None if req.finished else future.cancel())  # cancels the task in vLLM's loop

    async def _generate(self, req: GenRequest, request_id: str) -> None:
        s = req.sampling
        params = sampling_params(self.api, req)  # structured outputs and logprobs included (vllm_params.py)
        stop_ids = set(req.chat.stop_ids)
        lora = None
        if req.entry.kind == "adapter":
            lid = self._lora_ids.setdefault(req.entry.id, next(self._ids))
            lora = self.api.LoRARequest(req.entry.adapter_name, lid, str(req.entry.weights))
        sent, tokens = [0] * req.n, [0] * req.n
        try:
            final = None
            async for out in self.engine.generate(self.api.TokensPrompt(prompt_token_ids=req.prompt_ids), params,
                                                  request_id=request_id, lora_request=lora):
                for o in out.outputs:
                    lps = new_logprobs(o, tokens[o.index], s.top_logprobs, req.chat.tokenizer, stop_ids) if s.logprobs else None
                    tokens[o.index] = len(o.token_ids)
                    if len(o.text) > sent[o.index] or lps:
                        req.on_event("delta", (o.index, o.text[sent[o.index]:], lps))
                        sent[o.index] = len(o.text)
                final = out
            completion = 0
            for o in final.outputs if final else []:
                completion += len(o.token_ids)
                req.on_event("finish", (o.index, "length" if o.finish_reason == "length" else "stop"))
            p = len(req.prompt_ids)
            req.finished = True
            req.on_event("done", {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion})
        except asyncio.CancelledError:  # the client left: vLLM must stop generating for it
            self.stats["aborted"] += 1
            await self.engine.abort(request_id)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the client as a server error
            req.fail(exc)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def _vllm_api() -> Any:
    from types import SimpleNamespace

    require_vllm()
    import vllm.sampling_params as sp
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    return SimpleNamespace(SamplingParams=SamplingParams, TokensPrompt=TokensPrompt, LoRARequest=LoRARequest,
                           StructuredOutputsParams=getattr(sp, "StructuredOutputsParams", None),  # vLLM >= 0.10.2
                           GuidedDecodingParams=getattr(sp, "GuidedDecodingParams", None))


def _max_model_len(engine: Any) -> int:
    """vLLM's context length: ``model_config.max_model_len`` (v1 ``AsyncLLM``; the v0 engine under ``.engine``)."""
    for holder in (engine, getattr(engine, "engine", None)):
        config = getattr(holder, "model_config", None)
        if getattr(config, "max_model_len", None):
            return int(config.max_model_len)
    return 4096


class _NoModel:
    """Stands in for a torch model where only the tokenizer is needed (vLLM holds the weights)."""

    generation_config = None
