"""Classification served as classification, and structured answers from `tailored chat` (tiny models, fast).

A tiny LoRA trained on four labels: its manifest records them; `tailored eval` reports free and
label-constrained accuracy side by side; `tailored chat --constrain labels` and the server's
``constrain: "labels"`` answer with exact labels only; `tailored chat --json-schema` answers JSON
that validates (the demo's ticket-triage format).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import openai
import pytest

import tailored
from tailored.eval.run import evaluate
from tailored.cli.main import main
from tailored.config.manifest import RunFolder
from tailored.testing.tiny import WORDS

LABELS = ["billing", "bug", "login", "shipping"]
TRIAGE = {"type": "object", "properties": {
    "category": {"enum": ["shipping", "billing", "technical", "feedback"]}, "urgency": {"enum": ["low", "normal", "high"]}},
    "required": ["category", "urgency"], "additionalProperties": False}


def write_labelled(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = " ".join(rng.choice(WORDS[:50]) for _ in range(3))
        rows.append({"messages": [{"role": "user", "content": f"{label} {words}"}, {"role": "assistant", "content": label}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cls")
    train = write_labelled(root / "train.jsonl", 32, 0)
    test = write_labelled(root / "test.jsonl", 12, 1)
    tailored.train(data=str(train), model=str(tiny_model_dir), method="lora", max_steps=6, learning_rate_multiplier=100,
                   batch_size=8, max_seq_length=64, threads=1, red_flags="off", output=str(root / "run"))
    return root / "run", test


def test_labels_recorded_and_eval_reports_constrained_beside_free(classifier: tuple[Path, Path]) -> None:
    run, test = classifier
    assert RunFolder(run).read().labels == LABELS
    report = evaluate(run, test, baseline=None, probe=None, collapse=False, use_cache=False, progress=False,
                               save=False)
    assert report["constrained_to"] == LABELS
    metrics = report["models"]["tuned"]["metrics"]
    assert {"accuracy", "accuracy_constrained", "macro_f1_constrained"} <= set(metrics)
    assert all(a in LABELS for a in report["models"]["tuned"]["constrained_answers"])
    assert {"accuracy_ranked", "macro_f1_ranked"} <= set(metrics)
    assert all(a in LABELS for a in report["models"]["tuned"]["ranked_answers"])
    none = evaluate(run, test, baseline=None, probe=None, collapse=False, use_cache=False, progress=False,
                             save=False, constrain="none")
    assert "accuracy_constrained" not in none["models"]["tuned"]["metrics"]
    assert "accuracy_ranked" not in none["models"]["tuned"]["metrics"]

    assert none["models"]["tuned"]["metrics"]["accuracy"] == metrics["accuracy"]  # the free answers are the same


def test_chat_constrain_labels_and_json_schema(classifier: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = classifier
    for prompt in ("hot water", "the a an", "refund"):
        assert main(["chat", str(run), "--prompt", prompt, "--constrain", "labels", "--temperature", "1"]) == 0
        assert capsys.readouterr().out.strip() in LABELS
    schema = tmp_path / "triage.json"
    schema.write_text(json.dumps(TRIAGE))
    for t in ("0", "1"):
        assert main(["chat", str(tiny_model_dir), "--prompt", "my parcel is late", "--json-schema", str(schema),
                     "--temperature", t]) == 0
        jsonschema.validate(json.loads(capsys.readouterr().out), TRIAGE)
    assert main(["chat", str(tiny_model_dir), "--prompt", "x", "--constrain", "labels"]) != 0
    assert "not a classification run" in capsys.readouterr().err


def test_server_constrains_to_the_run_labels(classifier: tuple[Path, Path], tiny_model_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tailored.serve.server import start

    run, _ = classifier
    srv = start(base=str(tiny_model_dir), runs=[str(run)], api_key="k", batch_wait_ms=20, max_tokens=32)
    try:
        client = openai.OpenAI(base_url=srv.url, api_key="k", max_retries=0, _strict_response_validation=True)
        for seed in range(3):
            out = client.chat.completions.create(model=run.name, messages=[{"role": "user", "content": "water"}],
                                                 temperature=1.0, seed=seed, logprobs=True, top_logprobs=2,
                                                 extra_body={"constrain": "labels"})
            assert out.choices[0].message.content in LABELS
            assert out.choices[0].logprobs.content  # the model's confidence in its label
        remote = ["chat", "--url", srv.url, "--api-key", "k", "--temperature", "1", "--prompt", "water", "--max-new-tokens", "16"]
        assert main([*remote, "--model", run.name, "--constrain", "labels"]) == 0
        assert capsys.readouterr().out.strip() in LABELS
        assert main([*remote, "--model", "model", "--choice", "yes", "--choice", "no"]) == 0
        assert capsys.readouterr().out.strip() in ("yes", "no")
        with pytest.raises(openai.BadRequestError, match="classification run"):
            client.chat.completions.create(model="model", messages=[{"role": "user", "content": "x"}],
                                           extra_body={"constrain": "labels"})
    finally:
        srv.stop()
