"""The server under bad input and bad state: one request or one run folder never takes the others down.

Real uvicorn servers on 127.0.0.1 and the official ``openai`` SDK (strict validation) or raw ``httpx``;
the only stand-in is a small object in place of vLLM's engine (vLLM cannot run here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
import torch

import tailored
from tailored.errors import CheckpointError, ConfigError
from tailored.serve.server import start
from tailored.testing.tiny import WORDS

KEY = "robust-key"
MSGS = [{"role": "user", "content": "have each way from"}]
AUTH = {"authorization": f"Bearer {KEY}"}


def sdk(srv: Any, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0, _strict_response_validation=True)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoRA run (a few steps: only its folder's shape matters here)."""
    out = tmp_path_factory.mktemp("lora") / "run"
    rng = random.Random(0)
    rows = [{"messages": [{"role": "user", "content": " ".join(rng.choice(WORDS[:60]) for _ in range(4))},
                          {"role": "assistant", "content": "billing refund"}]} for _ in range(16)]
    data = out.parent / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tailored.train(data=str(data), model=str(tiny_model_dir), method="lora", max_steps=3, learning_rate_multiplier=300,
                   batch_size=8, max_seq_length=64, threads=1, red_flags="off", output=str(out))
    return out


def concurrently(*calls: Any) -> list[Any]:
    """Run the calls at the same moment in threads; each result, or the exception it raised."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


# --- 1. one request cannot fail the batch it shares -------------------------------------------------


def test_tiny_temperature_in_a_shared_batch_fails_neither_request(tiny_model_dir: Path) -> None:
    """temperature 1e-40 used to overflow the logits (inf, NaN softmax, multinomial raised) and fail the batch."""
    with start(base=str(tiny_model_dir), batch_wait_ms=500, max_tokens=16) as srv:
        client = sdk(srv, "x")

        def ask(**kw: Any) -> str:
            return client.chat.completions.create(model="model", messages=MSGS, max_tokens=8, **kw).choices[0].message.content

        greedy = ask(temperature=0)
        before = srv.built.engine.stats["batches"]
        poisoned, other = concurrently(lambda: ask(temperature=1e-40, seed=1), lambda: ask(temperature=0))
        assert srv.built.engine.stats["batches"] - before == 1  # both shared one batch
        assert other == greedy
        assert poisoned == greedy  # sampling as the temperature goes to 0 is greedy decoding


def test_seed_is_validated_and_seeds_near_the_limit_work(tiny_model_dir: Path) -> None:
    with start(base=str(tiny_model_dir), max_tokens=16) as srv:
        client = sdk(srv, "x")
        for seed in (2**63, 2**64, -(2**63) - 1):
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(model="model", messages=MSGS, max_tokens=4, temperature=1, seed=seed)
            assert err.value.param == "seed", seed
        for seed in (2**63 - 1, -(2**63)):  # choice i uses seed + i: the last choices wrap, they do not overflow
            out = client.chat.completions.create(model="model", messages=MSGS, max_tokens=4, temperature=1, seed=seed, n=3)
            assert len(out.choices) == 3
        for value in ("NaN", "Infinity"):  # Python's JSON reads these; pydantic must refuse them
            raw = httpx.post(srv.url + "/chat/completions", timeout=60,
                             content=f'{{"model": "model", "messages": {json.dumps(MSGS)}, "temperature": {value}}}'.encode())
            assert raw.status_code == 400 and raw.json()["error"]["param"] == "temperature", value


def test_a_row_that_fails_leaves_the_batch_and_the_other_rows_finish(tiny_model_dir: Path) -> None:
    from tailored.eval.generate import GenerationSettings
    from tailored.models.load import load_model, load_tokenizer
    from tailored.serve.decode import Row, TextStream, run_batch

    model, tok = load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    prompt = tok("have each way from", add_special_tokens=False)["input_ids"]

    def row(emit: Any, fail: Any = None, temperature: float = 0.0) -> Row:
        settings = GenerationSettings(max_new_tokens=10, temperature=temperature, ignore_eos=True)
        return Row(prompt, settings, TextStream(tok, set(), []), emit, fail=fail,
                   generator=torch.Generator().manual_seed(0) if temperature else None)

    alone: list[str] = []
    run_batch(model, [row(lambda text, finish: alone.append(text))], int(tok.pad_token_id))

    def broken_emit(text: str, finish: str | None) -> None:
        raise RuntimeError("the client's callback broke")

    failures: list[BaseException] = []
    together: list[str] = []
    run_batch(model, [row(broken_emit, failures.append), row(lambda text, finish: together.append(text))],
              int(tok.pad_token_id))
    assert "".join(together) == "".join(alone) and len(together) == len(alone)
    assert len(failures) == 1 and "callback broke" in str(failures[0])


def test_sampling_is_nan_safe() -> None:
    from tailored.eval.generate import GenerationSettings
    from tailored.serve.decode import Row, pick_tokens

    def row(t: float) -> Row:
        return Row([1], GenerationSettings(temperature=t), None, None, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]

    logits = torch.tensor([[0.0, 30.0, 29.0, -float("inf")]] * 3)
    assert pick_tokens(logits, [row(1e-40), row(1e-7), row(1e-3)]) == [1, 1, 1]
    wild = torch.tensor([[3e38, -3e38, 0.0, 1.0]])  # finite, but dividing by a small temperature overflows
    assert pick_tokens(wild, [row(0.01)]) == [0]
    with pytest.raises(Exception, match="non-finite"):  # NaN logits: that row fails, with a clear reason
        pick_tokens(torch.tensor([[float("nan"), 1.0]]), [row(1.0)])


# --- 9. pickled adapter weights are never handed to peft -----------------------------------------------


def test_adapter_folder_with_only_a_bin_is_refused_before_peft(lora_run: Path, tmp_path: Path,
                                                               tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peft
    from safetensors.torch import load_file

    from tailored.methods import get_method
    from tailored.methods.runs import load_run
    from tailored.models.load import load_model
    from tailored.serve.lora_bank import LoraBank

    run = tmp_path / "pickled"
    shutil.copytree(lora_run, run)
    weights = run / "adapter" / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), run / "adapter" / "adapter_model.bin")
    weights.unlink()
    opened: list[str] = []
    real = peft.PeftModel.from_pretrained
    monkeypatch.setattr(peft.PeftModel, "from_pretrained",
                        classmethod(lambda cls, model, folder, **kw: opened.append(folder) or real(model, folder, **kw)))
    with pytest.raises(CheckpointError, match=r"adapter_model\.bin.*safetensors"):
        get_method("lora").load(load_model(tiny_model_dir), run / "adapter")
    with pytest.raises(CheckpointError, match=r"safetensors"):
        load_run(run)
    with pytest.raises(CheckpointError, match=r"safetensors"):
        LoraBank(load_model(tiny_model_dir)).load("x", run / "adapter")
    assert opened == []  # peft never saw the folder
