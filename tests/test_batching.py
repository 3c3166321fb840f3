"""Batching is exact: packing and micro-batching change speed, never the loss."""

from __future__ import annotations

import torch

from tailored.data.batching import epoch_steps, micro_batches, shard
from tailored.data.readers import read_records
from tailored.data.tokenize import encode_all
from tailored.models.load import load_model, load_tokenizer
from tailored.train.forward import token_loss


def _rows(tiny_model_dir, chat_file):
    tok = load_tokenizer(tiny_model_dir)
    rows, _ = encode_all(tok, read_records(chat_file).examples, max_seq_length=256)
    return tok, rows


def _loss(model, batches):
    total = tokens = 0.0
    for mb in batches:
        out = token_loss(model, mb)
        total += float(out.loss_sum)
        tokens += out.n_tokens
    return total, tokens


def test_packed_loss_equals_padded_loss(tiny_model_dir, chat_file):
    tok, rows = _rows(tiny_model_dir, chat_file)
    model = load_model(tiny_model_dir).eval()
    rows = rows[:12]
    with torch.no_grad():
        padded = _loss(model, micro_batches(rows, pad_id=tok.pad_token_id, micro_batch_tokens=100_000))
        packed_batches = micro_batches(rows, pad_id=tok.pad_token_id, micro_batch_tokens=0, strategy="pack", max_seq_length=256)
        packed = _loss(model, packed_batches)
        one_by_one = _loss(model, [mb for r in rows for mb in micro_batches([r], pad_id=tok.pad_token_id, micro_batch_tokens=10**6)])
    assert len(packed_batches) < len(rows)  # really packed several examples per row
    assert packed[1] == padded[1] == one_by_one[1]
    assert abs(packed[0] - one_by_one[0]) < 1e-3 * one_by_one[0]
    assert abs(padded[0] - one_by_one[0]) < 1e-3 * one_by_one[0]


def test_packing_without_position_reset_would_leak(tiny_model_dir, chat_file):
    """The equality above is meaningful: the same rows packed as one sequence give another loss."""
    tok, rows = _rows(tiny_model_dir, chat_file)
    model = load_model(tiny_model_dir).eval()
    packed = micro_batches(rows[:6], pad_id=tok.pad_token_id, micro_batch_tokens=0, strategy="pack", max_seq_length=256)[0]
    leaky = type(packed)(packed.input_ids, packed.labels, None, torch.arange(packed.input_ids.shape[1])[None], packed.n_examples)
    with torch.no_grad():
        assert abs(float(token_loss(model, packed).loss_sum) - float(token_loss(model, leaky).loss_sum)) > 1e-3


def test_loss_only_at_labels_matches_full_logits(tiny_model_dir, chat_file):
    tok, rows = _rows(tiny_model_dir, chat_file)
    model = load_model(tiny_model_dir).eval()
    mb = micro_batches(rows[:5], pad_id=tok.pad_token_id, micro_batch_tokens=10**6)[0]
    with torch.no_grad():
        ours = token_loss(model, mb)
        logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1]
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), mb.labels[:, 1:].reshape(-1),
                                                ignore_index=-100, reduction="sum")
    assert ours.n_tokens == int((mb.labels[:, 1:] != -100).sum())
    assert abs(float(ours.loss_sum) - float(ref)) < 1e-3 * float(ref)


def test_epoch_plan_is_deterministic_grouped_and_complete():
    lengths = [10 + (i * 37) % 90 for i in range(103)]
    a = epoch_steps(lengths, 8, seed=1, epoch=0)
    assert a == epoch_steps(lengths, 8, seed=1, epoch=0)
    assert a != epoch_steps(lengths, 8, seed=1, epoch=1)
    assert sorted(i for s in a for i in s) == list(range(103))
    spread = sum(max(lengths[i] for i in s) - min(lengths[i] for i in s) for s in a) / len(a)
    assert spread < 20  # length-grouped: far below the 90-token range of the data
    merged = epoch_steps(lengths[:17], 8, seed=0, epoch=0, min_size=2)  # 17 = 8 + 8 + 1 → the 1 is merged
    assert sorted(len(s) for s in merged) == [8, 9]


def test_shard_splits_a_step_without_loss_or_overlap():
    lengths = [5, 50, 7, 30, 12]
    parts = [shard([0, 1, 2, 3, 4], lengths, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == [0, 1, 2, 3, 4] and not set(parts[0]) & set(parts[1])
