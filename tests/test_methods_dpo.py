"""DPO: the loss is the textbook formula against the base as reference, without a second model in memory."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tailored.data.readers import read_records
from tailored.errors import DataError
from tailored.methods import get_method
from tailored.methods.dpo import _sequence_logps
from tailored.models.load import load_model, load_tokenizer


@pytest.fixture()
def pref_file(tmp_path):
    rows = [{"input": {"messages": [{"role": "user", "content": f"the {w} of"}]},
             "preferred_output": [{"role": "assistant", "content": f"{w} {w}"}],
             "non_preferred_output": [{"role": "assistant", "content": "no"}]}
            for w in ("water", "time", "word", "day", "people", "number")]
    path = tmp_path / "pref.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _setup(tiny_model_dir, pref_file, beta=0.5):
    method = get_method("dpo")
    options = method.Options(dpo_beta=beta, lora_r=4)
    objective = method.objective(options)
    tok = load_tokenizer(tiny_model_dir)
    pairs, stats = objective.encode(tok, read_records(pref_file, format="preference").examples, max_seq_length=128)
    assert stats.kept == len(pairs) == 6
    batch = objective.batches(pairs, pad_id=tok.pad_token_id, micro_batch_tokens=10_000)[0]
    torch.manual_seed(0)
    model = method.prepare(load_model(tiny_model_dir), options)
    return objective, batch, model, pairs


def test_pairs_share_the_prompt_and_label_only_the_answers(tiny_model_dir, pref_file):
    _, _, _, pairs = _setup(tiny_model_dir, pref_file)
    for p in pairs:
        first = next(i for i, x in enumerate(p.chosen.labels) if x != -100)
        assert p.chosen.input_ids[:first] == p.rejected.input_ids[:first]  # same prompt tokens
        assert p.rejected.n_labels > 0 and p.chosen.n_labels > p.rejected.n_labels


def test_loss_starts_at_log2_and_matches_the_formula(tiny_model_dir, pref_file):
    objective, batch, model, _ = _setup(tiny_model_dir, pref_file, beta=0.5)
    with torch.no_grad():
        out = objective.loss(model, batch)
    assert out.n_tokens == 6
    assert float(out.loss_sum) / 6 == pytest.approx(math.log(2), abs=1e-6)  # LoRA starts as a no-op: policy == reference
    with torch.no_grad():  # move the policy away from the reference
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
        out = objective.loss(model, batch)
        policy = _sequence_logps(model, batch, "cpu")
        reference = _sequence_logps(load_model(tiny_model_dir), batch, "cpu")  # a real second copy, for the test only
    margin = (policy[:6] - reference[:6]) - (policy[6:] - reference[6:])
    assert float(out.loss_sum) == pytest.approx(float(-F.logsigmoid(0.5 * margin).sum()), rel=1e-5)
    assert out.n_correct == int((margin > 0).sum())
    assert abs(float(out.loss_sum) / 6 - math.log(2)) > 1e-3
    # the adapters are switched back on after the reference pass
    assert any(p.requires_grad for p in model.parameters())


def test_gradient_flows_only_to_the_adapter(tiny_model_dir, pref_file):
    objective, batch, model, _ = _setup(tiny_model_dir, pref_file)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    objective.loss(model, batch).loss_sum.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)


def test_chat_data_is_refused_with_a_hint(tiny_model_dir, chat_file):
    method = get_method("dpo")
    objective = method.objective(method.Options())
    with pytest.raises(DataError, match="preference pairs"):
        objective.encode(load_tokenizer(tiny_model_dir), read_records(chat_file).examples, max_seq_length=128)


def test_overlong_pairs_are_counted(tiny_model_dir, pref_file):
    method = get_method("dpo")
    objective = method.objective(method.Options())
    examples = read_records(pref_file, format="preference").examples
    pairs, stats = objective.encode(load_tokenizer(tiny_model_dir), examples, max_seq_length=12)
    assert len(pairs) + len(stats.dropped_too_long) == 6 and stats.dropped_too_long
