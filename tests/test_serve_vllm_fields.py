"""``--engine vllm`` passes structured outputs and logprobs in vLLM's terms (vLLM needs CUDA: a stand-in
engine with vLLM's interface answers here, and the strict openai SDK reads the result)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai

SCHEMA = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"]}


class EchoVllm:
    """vLLM's ``generate``: answers ``{"a": "x"}`` in three tokens, with a logprob dict per token when asked."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    async def generate(self, prompt: Any, params: Any, request_id: str, lora_request: Any = None) -> Any:
        self.params.append(params)
        pieces, ids = ['{"a": ', '"x"', "}"], [11, 12, 13]
        for i in range(len(pieces)):
            lps = None
            if params.logprobs is not None:
                lps = [{t: SimpleNamespace(logprob=-0.5, rank=1, decoded_token="?"),
                        t + 1: SimpleNamespace(logprob=-1.5, rank=2, decoded_token="?")} for t in ids[: i + 1]]
            yield SimpleNamespace(outputs=[SimpleNamespace(index=0, text="".join(pieces[: i + 1]), token_ids=ids[: i + 1],
                                                           logprobs=lps, finish_reason="stop" if i == 2 else None)])

    async def abort(self, request_id: str) -> None:
        pass


def serve(tiny_model_dir: Path, api: Any):
    from tailored.models.load import content_hash
    from tailored.serve.app import create_app
    from tailored.serve.registry import Registry
    from tailored.serve.server import Built, Running
    from tailored.serve.settings import parse_settings
    from tailored.serve.vllm_engine import VllmEngine

    settings = parse_settings(base=str(tiny_model_dir), port=0, max_tokens=64, jobs=False, api_key="k")
    registry = Registry(tiny_model_dir, "model", content_hash(tiny_model_dir), [])
    fake = EchoVllm()
    engine = VllmEngine(registry, settings, engine=fake, api=api, context=512)
    return fake, Running(Built(settings, registry, engine, create_app(engine, registry)))


def api(**extra: Any) -> Any:
    return SimpleNamespace(SamplingParams=lambda **kw: SimpleNamespace(**kw), TokensPrompt=lambda **kw: kw,
                           LoRARequest=lambda *a: a, **extra)


def test_structured_outputs_and_logprobs_reach_vllm(tiny_model_dir: Path) -> None:
    new = api(StructuredOutputsParams=lambda **kw: ("structured", kw))
    fake, running = serve(tiny_model_dir, new)
    with running as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="k", max_retries=0, _strict_response_validation=True)
        msgs = [{"role": "user", "content": "x"}]
        fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
        out = client.chat.completions.create(model="model", messages=msgs, response_format=fmt, logprobs=True,
                                             top_logprobs=2)
        assert out.choices[0].message.content == '{"a": "x"}'
        assert fake.params[-1].structured_outputs == ("structured", {"json": SCHEMA})
        assert fake.params[-1].logprobs == 2
        content = out.choices[0].logprobs.content
        assert [t.logprob for t in content] == [-0.5] * 3 and all(len(t.top_logprobs) == 2 for t in content)
        client.chat.completions.create(model="model", messages=msgs, extra_body={"guided_choice": ["x", "y"]})
        assert fake.params[-1].structured_outputs == ("structured", {"choice": ["x", "y"]})
        client.chat.completions.create(model="model", messages=msgs)
        assert fake.params[-1].logprobs is None and not hasattr(fake.params[-1], "structured_outputs")


def test_older_vllm_gets_guided_decoding(tiny_model_dir: Path) -> None:
    old = api(StructuredOutputsParams=None, GuidedDecodingParams=lambda **kw: ("guided", kw))
    fake, running = serve(tiny_model_dir, old)
    with running as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="k", max_retries=0, _strict_response_validation=True)
        client.chat.completions.create(model="model", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"guided_regex": "[a-z]+"})
        assert fake.params[-1].guided_decoding == ("guided", {"regex": "[a-z]+"})
