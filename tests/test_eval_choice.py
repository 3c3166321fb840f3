"""Multiple-choice scoring by log-likelihood: exact against a plain full-logits computation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from tailored.errors import DataError
from tailored.eval.choice import DEFAULT_PROBE, ChoiceItem, _rows, choice_logprobs, read_choice_file, score_choices

ITEMS = [ChoiceItem("What is the capital of France?", ["Paris", "a refund", "the login page"], 0),
         ChoiceItem("Which word is a colour?", ["green", "invoice", "crash", "shipping label"], 0)]


def _reference(model: torch.nn.Module, tokenizer, items: list[ChoiceItem]) -> list[list[float]]:
    out = []
    for item in items:
        scores = []
        for ids, k in _rows(tokenizer, item):
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
            logp = torch.log_softmax(logits[:-1], -1)
            scores.append(float(sum(logp[j - 1, ids[j]] for j in range(k, len(ids)))))
        out.append(scores)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from tailored.models.load import load_model, load_tokenizer

    model = load_model(tiny_model_dir)
    model.eval()
    return model, load_tokenizer(tiny_model_dir)


def test_logprobs_match_full_logits(tiny) -> None:
    model, tok = tiny
    with torch.no_grad():
        fast = choice_logprobs(model, tok, ITEMS, batch_rows=3)  # batches straddle items, with padding
        slow = _reference(model, tok, ITEMS)
    for a, b in zip(fast, slow):
        assert a == pytest.approx(b, abs=1e-3)


def test_logprobs_through_a_peft_wrapper(tiny) -> None:
    from peft import LoraConfig, get_peft_model

    base, tok = tiny
    import copy

    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.eval()
    with torch.no_grad():
        fast = choice_logprobs(model, tok, ITEMS)
        slow = _reference(model, tok, ITEMS)
        plain = choice_logprobs(base, tok, ITEMS)
    assert fast[0] == pytest.approx(slow[0], abs=1e-3)
    assert fast[0] != pytest.approx(plain[0], abs=1e-3)  # the adapter is really applied


def test_score_choices_picks_the_most_likely() -> None:
    items = [ChoiceItem("q", ["aa", "b"], 0), ChoiceItem("q", ["aaaa", "b"], 0)]
    out = score_choices(items, [[-1.0, -2.0], [-3.0, -2.0]])
    assert out["correct"] == [1.0, 0.0] and out["accuracy"] == 0.5
    assert out["accuracy_norm"] == 1.0  # per character, "aaaa" (-0.75/char) beats "b" (-2/char)
    assert out["chance"] == 0.5


def test_probe_file_reading(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"question": "q", "choices": ["x", "y"], "answer": "B"}) + "\n")
    assert read_choice_file(f)[0].answer_index == 1
    f.write_text(json.dumps({"question": "q", "choices": ["x", "y"], "answer_index": 5}) + "\n")
    with pytest.raises(DataError, match="line 1"):
        read_choice_file(f)


def test_bad_probe_lines_are_named(tmp_path: Path) -> None:
    from tailored.eval.choice import is_choice_file

    item = {"question": "q\u2028still the question", "choices": ["x", "y\u2029z"], "answer_index": 0}
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    [read] = read_choice_file(f)
    assert read.question == item["question"] and read.choices == item["choices"] and is_choice_file(f)
    for content, says in (("[1, 2]", "line 2: expected a JSON object"), ("{oops", "line 2: not valid JSON"),
                          ('{"question": "q", "choices": "xy", "answer_index": 0}', "line 2: choices must be a list")):
        f.write_text(json.dumps(item) + "\n" + content + "\n")
        with pytest.raises(DataError, match=says):
            read_choice_file(f)
    f.write_bytes(b"\xe9t\xe9\n")
    with pytest.raises(DataError, match="line 1: not UTF-8"):
        read_choice_file(f)
    f.write_text("{oops\n")
    assert not is_choice_file(f)
    with pytest.raises(DataError, match="no such probe file"):
        read_choice_file(tmp_path / "missing.jsonl")


def test_default_probe_is_sound() -> None:
    items = read_choice_file(DEFAULT_PROBE)
    assert len(items) == 100
    assert all(len(i.choices) == 4 and len({c.lower() for c in i.choices}) == 4 for i in items)
    assert Counter(i.answer_index for i in items) == {0: 25, 1: 25, 2: 25, 3: 25}  # no position bias to exploit
    assert len({i.question for i in items}) == len(items)
    # no answer-form bias either: phrases, not one-word answers, and the right one is neither usually the
    # longest nor usually the shortest (the old one-word trivia rewarded a tuned model's taste for short answers)
    assert all(len(c.split()) >= 2 for i in items for c in i.choices)
    lengths = [[len(c) for c in i.choices] for i in items]
    longest = sum(n[i.answer_index] > max(m for j, m in enumerate(n) if j != i.answer_index) for i, n in zip(items, lengths))
    shortest = sum(n[i.answer_index] < min(m for j, m in enumerate(n) if j != i.answer_index) for i, n in zip(items, lengths))
    assert longest <= 30 and shortest <= 30, (longest, shortest)
