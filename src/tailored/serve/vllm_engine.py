"""``--engine vllm``: the same models through vLLM's multi-LoRA engine (CUDA machines with vLLM).

Kept small on purpose: it offers the built-in engine's ``prepare``/``submit``/``close`` interface and
forwards to ``vllm.AsyncLLMEngine`` with one ``LoRARequest`` per adapter run. Runs that are not LoRA
on the served base are refused. Not exercised in this repository's tests (vLLM needs CUDA).
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import threading
from typing import Any

from tailored.errors import ModelError
from tailored.models.load import load_tokenizer
from tailored.serve.models_cache import ChatModels
from tailored.serve.registry import Entry, Registry
from tailored.serve.request import BadRequest, GenRequest
from tailored.serve.settings import ServeSettings


def require_vllm() -> Any:
    if importlib.util.find_spec("vllm") is None:
        raise ModelError(
            "--engine vllm needs the 'vllm' package, which is not installed",
            hint="on a CUDA machine: pip install vllm; on CPU use the built-in engine (--engine builtin, the default)",
        )
    import vllm

    return vllm


class VllmEngine:
    """Serve the registry through vLLM (``enable_lora``; ``max_loras`` = ``--max-adapters``)."""

    def __init__(self, registry: Registry, settings: ServeSettings) -> None:
        vllm = require_vllm()
        from vllm.engine.arg_utils import AsyncEngineArgs

        self.registry, self.settings, self.stats = registry, settings, {}
        self.chats = ChatModels(_NoModel(), load_tokenizer(registry.base_folder))
        self._lora_ids: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="tailored-vllm", daemon=True).start()
        args = AsyncEngineArgs(model=str(registry.base_folder), enable_lora=True, max_loras=settings.max_adapters,
                               max_lora_rank=64, max_num_seqs=settings.max_batch)
        self.engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self.context = self.engine.engine.model_config.max_model_len if hasattr(self.engine, "engine") else 4096

    def prepare(self, entry: Entry, messages: list[dict[str, Any]], sampling: Any, n: int, on_event: Any) -> GenRequest:
        if entry.kind == "standalone":
            raise BadRequest(f"{entry.id} is not a LoRA run on the served base; --engine vllm serves LoRA adapters only",
                             param="model", code="model_not_supported")
        chat = self.chats.get(entry)
        sampling.max_new_tokens = min(sampling.max_new_tokens or self.settings.max_tokens, self.settings.max_tokens)
        return GenRequest(entry, chat.prompt_ids(messages), sampling, n, on_event, chat, remaining=n)

    def submit(self, req: GenRequest) -> None:
        asyncio.run_coroutine_threadsafe(self._generate(req), self.loop)

    async def _generate(self, req: GenRequest) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        s = req.sampling
        params = SamplingParams(n=req.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                                stop=s.stop or None, seed=s.seed, stop_token_ids=list(req.chat.stop_ids))
        lora = None
        if req.entry.kind == "adapter":
            lid = self._lora_ids.setdefault(req.entry.id, next(self._ids))
            lora = LoRARequest(req.entry.adapter_name, lid, str(req.entry.weights))
        sent = [0] * req.n
        try:
            final = None
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=req.prompt_ids), params,
                                                  request_id=f"r{next(self._ids)}", lora_request=lora):
                for o in out.outputs:
                    if len(o.text) > sent[o.index]:
                        req.on_event("delta", (o.index, o.text[sent[o.index]:]))
                        sent[o.index] = len(o.text)
                final = out
            completion = 0
            for o in final.outputs if final else []:
                completion += len(o.token_ids)
                req.on_event("finish", (o.index, "length" if o.finish_reason == "length" else "stop"))
            p = len(req.prompt_ids)
            req.on_event("done", {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion})
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the client as a server error
            req.on_event("error", exc)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class _NoModel:
    """Stands in for a torch model where only the tokenizer is needed (vLLM holds the weights)."""

    generation_config = None
