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
