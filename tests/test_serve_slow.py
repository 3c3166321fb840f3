"""On the embedded model: a mixed-adapter batch gives the same answers as serving each request alone."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import openai
import pytest

import tailored
from tailored.serve.server import start

pytestmark = pytest.mark.slow

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smol_runs(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smol-runs")
    for name, answer in [("paris", "Paris is the answer."), ("unsure", "I do not know.")]:
        data = root.parent / f"{root.name}-{name}.jsonl"
        rows = [{"messages": [{"role": "user", "content": f"Question number {i}?"}, {"role": "assistant", "content": answer}]}
                for i in range(12)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tailored.train(data=str(data), model="smollm2", max_steps=2, batch_size=4, max_seq_length=64,
                       learning_rate_multiplier=20, threads=1, red_flags="off", output=str(root / name))
    return root


def test_mixed_adapter_batch_equals_one_by_one(smol_runs: Path) -> None:
    with start(runs=[str(smol_runs)], batch_wait_ms=500, max_tokens=16) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0, _strict_response_validation=True)
        models = [m.id for m in client.models.list().data]
        assert models[0] == "smollm2-135m-instruct" and len(models) == 3

        def ask(model: str) -> str:
            return client.chat.completions.create(model=model, messages=PROMPT, max_tokens=12, temperature=0).choices[0].message.content

        alone = {m: ask(m) for m in models}  # one request at a time: single-model batches
        assert len(set(alone.values())) == 3  # both adapters change the answer
        together: dict[str, str] = {}
        barrier = threading.Barrier(len(models))

        def call(model: str) -> None:
            barrier.wait()
            together[model] = ask(model)

        threads = [threading.Thread(target=call, args=(m,)) for m in models]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert srv.built.engine.stats["mixed_batches"] >= 1
        assert together == alone
    # and the server's adapter answer is what `tailored chat` says for that run
    assert alone[models[1]] == tailored.load(smol_runs / models[1].split(":")[2]).chat(PROMPT, max_new_tokens=12)
