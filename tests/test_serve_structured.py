"""Structured outputs and logprobs through the real server (uvicorn on 127.0.0.1) and the strict openai SDK.

A tiny random model knows nothing of JSON: whatever the constraint allows it says, so every answer
that parses and validates does so because of the grammar, not the model.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jsonschema
import openai
import pytest

from tailored.serve.server import start

KEY = "test-key"
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "shipping", "technical"]},
        "urgency": {"enum": ["low", "normal", "high"]},
        "customer": {
            "type": "object",
            "properties": {"vip": {"type": "boolean"}, "tier": {"type": "string", "enum": ["gold", "silver"]},
                           "tickets": {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": ["vip", "tier", "tickets"], "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["refund", "late", "bug"]}, "maxItems": 3},
    },
    "required": ["category", "urgency", "customer", "tags"],
    "additionalProperties": False,
}
PROMPTS = ["the order is late", "refund please", "login crash bug", "where is my label", "json invoice", "hot water"]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    srv = start(base=str(tiny_model_dir), runs=[], api_key=KEY, batch_wait_ms=50, max_tokens=200)
    yield openai.OpenAI(base_url=srv.url, api_key=KEY, max_retries=0, _strict_response_validation=True)
    srv.stop()


def ask(client: openai.OpenAI, prompt: str, **kwargs):
    kwargs.setdefault("max_tokens", 200)
    return client.chat.completions.create(model="model", messages=[{"role": "user", "content": prompt}], **kwargs)


def test_json_schema_answers_always_validate(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}
    seen = set()
    for i, prompt in enumerate(PROMPTS):
        settings = {"temperature": 0} if i < 2 else {"temperature": 1.0, "seed": i, "n": 2}
        out = ask(client, prompt, response_format=fmt, **settings)
        for choice in out.choices:
            assert choice.finish_reason == "stop", choice.message.content
            value = json.loads(choice.message.content)
            jsonschema.validate(value, SCHEMA)
            seen.add(choice.message.content)
    assert len(seen) > 1  # sampling varies within the schema


def test_json_object_and_streaming(client: openai.OpenAI) -> None:
    """Any JSON object: free-text strings may run to the token limit on a random model (finish_reason
    says so); a finished one parses, and the stream says the same as the plain answer."""
    for seed in range(4):
        out = ask(client, "anything", response_format={"type": "json_object"}, temperature=0.7, seed=seed, max_tokens=60)
        text = out.choices[0].message.content
        assert text.startswith("{")
        if out.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
    fmt = {"type": "json_object"}
    plain = ask(client, "anything", response_format=fmt, temperature=0, max_tokens=60).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       ask(client, "anything", response_format=fmt, stream=True, temperature=0, max_tokens=60) if c.choices)
    assert streamed == plain


def test_guided_choice_and_regex_the_vllm_way(client: openai.OpenAI) -> None:
    labels = ["billing refund", "shipping", "login password"]
    for i, prompt in enumerate(PROMPTS[:4]):
        out = ask(client, prompt, temperature=1.0, seed=i, extra_body={"guided_choice": labels})
        assert out.choices[0].message.content in labels
    out = ask(client, "code?", temperature=1.0, seed=1, extra_body={"structured_outputs": {"regex": r"[0-9]{3}-[a-z]{2,4}"}})
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", out.choices[0].message.content)


def test_bad_constraints_are_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="at most one"):
        ask(client, "x", response_format={"type": "json_object"}, extra_body={"guided_choice": ["a"]})
    with pytest.raises(openai.BadRequestError, match="regex"):
        ask(client, "x", extra_body={"guided_regex": "(unclosed"})
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        ask(client, "x", top_logprobs=3)


def test_logprobs_in_openai_shape(client: openai.OpenAI) -> None:
    out = ask(client, "refund please", logprobs=True, top_logprobs=3, temperature=0, max_tokens=8)
    choice = out.choices[0]
    content = choice.logprobs.content
    assert content and len(content) == out.usage.completion_tokens - (choice.finish_reason == "stop")
    assert "".join(bytes(t.bytes).decode("utf-8", "replace") for t in content).strip() == choice.message.content.strip()
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
        assert math.isclose(t.logprob, t.top_logprobs[0].logprob, abs_tol=1e-6)  # greedy: the most likely token
    # constrained: the logprobs are the model's own (raw) distribution, the token one of the choices
    out = ask(client, "x", logprobs=True, temperature=0, extra_body={"guided_choice": ["shipping", "bug"]})
    assert out.choices[0].message.content in ("shipping", "bug") and out.choices[0].logprobs.content
    chunks = [c for c in ask(client, "refund please", logprobs=True, top_logprobs=2, stream=True, temperature=0, max_tokens=6)
              if c.choices and c.choices[0].logprobs]
    assert sum(len(c.choices[0].logprobs.content) for c in chunks) == len(content[:6])
    plain = ask(client, "refund please", temperature=0, max_tokens=4)
    assert plain.choices[0].logprobs is None
