"""Inference-time merging and the per-row hooks, on tiny models (fast).

chat/eval (``tailored.load``) and standalone serving load mergeable runs merged in memory: a DoRA
answer then computes no weight norm per token (the test counts them, it does not time them), and
merged answers equal unmerged ones. The hooks: a choice constraint through HF ``generate`` gives
exact labels only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tailored
from tailored.engine.constraints import Structure
from tailored.eval.generate import ChatModel, GenerationSettings
from tailored.methods.runs import load_run


@pytest.fixture(scope="module")
def dora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tailored.testing.tiny import write_chat_dataset

    out = tmp_path_factory.mktemp("dora")
    data = write_chat_dataset(out / "train.jsonl", n=24)
    tailored.train(data=str(data), model=str(tiny_model_dir), method="dora", max_steps=3, learning_rate_multiplier=50,
                   batch_size=8, max_seq_length=64, threads=1, red_flags="off", output=str(out / "run"))
    return out / "run"


def count_norms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count (and still compute) every DoRA weight-norm computation in peft."""
    from peft.tuners.lora import dora

    calls = [0]
    real = dora.DoraLinearLayer.get_weight_norm

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(dora.DoraLinearLayer, "get_weight_norm", counted)
    return calls


def test_dora_chat_runs_merged_without_per_token_norms(dora_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_norms(monkeypatch)
    settings = {"max_new_tokens": 16, "ignore_eos": True}
    unmerged_model, tok, manifest = load_run(dora_run)
    calls[0] = 0
    unmerged = ChatModel(unmerged_model, tok, manifest).chat("refund please", **settings)
    per_answer_unmerged = calls[0]
    layers = sum(1 for m in unmerged_model.modules() if type(m).__name__ == "DoraLinearLayer")
    assert per_answer_unmerged >= layers * 16  # a norm per DoRA layer per step: what merging saves

    calls[0] = 0
    chat = tailored.load(dora_run)  # what `tailored chat` and `tailored eval` use
    loaded = calls[0]
    calls[0] = 0
    merged = chat.chat("refund please", **settings)
    assert calls[0] == 0, f"{calls[0]} DoRA weight norms computed while answering"
    assert loaded <= 2 * layers  # the merge itself: a bounded, one-off cost
    assert not hasattr(chat.model, "peft_config")
    assert merged == unmerged


def test_choice_constraint_through_generate(tiny_model_dir: Path) -> None:
    chat = tailored.load(str(tiny_model_dir))
    labels = ["billing refund", "shipping", "login password", "bug"]
    convs = [[{"role": "user", "content": p}] for p in ("the order", "hot water", "crash", "refund", "a b c")]
    s = GenerationSettings(max_new_tokens=12, temperature=1.0, seed=0, constraint=Structure.choice(labels))
    answers = chat.generate_batch(convs, s)
    assert all(a in labels for a in answers), answers
    free = chat.generate_batch(convs, GenerationSettings(max_new_tokens=12))
    assert any(a not in labels for a in free)  # a random model does not say labels by itself


def test_logprob_hook_sees_raw_logits_before_the_mask() -> None:
    from tailored.engine.hooks import accept, apply
    from tailored.engine.logprobs import LogprobRecorder

    rec = LogprobRecorder(top=2)

    class MaskAllButTwo:
        def process(self, logits: torch.Tensor) -> None:
            logits[:2] = float("-inf")

        def accept(self, token: int) -> None:
            pass

    logits = torch.tensor([5.0, 4.0, 1.0, 0.0])
    hooks = [rec, MaskAllButTwo()]
    apply(hooks, logits)
    accept(hooks, int(logits.argmax()))
    [entry] = rec.take()
    assert entry.token == 2 and [t for t, _ in entry.top] == [0, 1]
    assert entry.logprob == pytest.approx(float(torch.log_softmax(torch.tensor([5.0, 4.0, 1.0, 0.0]), 0)[2]))
