"""Batching is exact: packing and micro-batching change speed, never the loss."""

from __future__ import annotations

import torch

from tailored.data.batching import epoch_steps, micro_batches, shard
from tailored.data.readers import read_records
from tailored.data.tokenize import IGNORE, encode_all
from tailored.models.load import load_model, load_tokenizer
from tailored.train.forward import labelled_logits, model_inputs, token_loss


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


def _per_token(model, batches, layout=None) -> dict[tuple[int, ...], torch.Tensor]:
    """Each example's per-token losses (the training code's forward pass), keyed by the example's token ids.

    ``layout``: the micro-batch whose examples split the losses (default: each micro-batch itself).
    """
    out = {}
    for mb in batches:
        examples = _examples(layout or mb)
        logits, targets = labelled_logits(model, mb.labels, **model_inputs(mb))
        losses = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        out.update({ids: loss for (ids, _), loss in zip(examples, losses.split([n for _, n in examples]))})
    return out


def _examples(mb) -> list[tuple[tuple[int, ...], int]]:
    """(token ids, number of labelled targets) of every example of a micro-batch, in row-major order."""
    found = []
    for r in range(mb.input_ids.shape[0]):
        if mb.position_ids is not None:
            starts = (mb.position_ids[r] == 0).nonzero().flatten().tolist()
            spans = list(zip(starts, starts[1:] + [mb.input_ids.shape[1]]))
        else:
            spans = [(0, int(mb.attention_mask[r].sum()))]
        for s, e in spans:
            found.append((tuple(mb.input_ids[r, s:e].tolist()), int((mb.labels[r, s + 1 : e] != IGNORE).sum())))
    return found


def test_packed_loss_equals_padded_loss(tiny_model_dir, chat_file):
    """Every labelled token has the same loss packed, padded and alone: no example sees another."""
    tok, rows = _rows(tiny_model_dir, chat_file)
    model = load_model(tiny_model_dir).eval()
    rows = rows[:12]
    assert len({tuple(r.input_ids) for r in rows}) == len(rows)
    with torch.no_grad():
        padded_batches = micro_batches(rows, pad_id=tok.pad_token_id, micro_batch_tokens=100_000)
        packed_batches = micro_batches(rows, pad_id=tok.pad_token_id, micro_batch_tokens=0, strategy="pack", max_seq_length=256)
        alone_batches = [mb for r in rows for mb in micro_batches([r], pad_id=tok.pad_token_id, micro_batch_tokens=10**6)]
        padded, packed, alone = (_per_token(model, b) for b in (padded_batches, packed_batches, alone_batches))
        packed_sum = _loss(model, packed_batches)
        alone_sum = _loss(model, alone_batches)
    assert len(packed_batches) < len(rows)  # really packed several examples per row
    assert max(len(_examples(mb)) for mb in packed_batches) >= 3
    assert len(padded_batches) == 1 and padded_batches[0].input_ids.shape[0] == len(rows)  # really padded together
    assert padded.keys() == packed.keys() == alone.keys() == {tuple(r.input_ids) for r in rows}
    for ids, want in alone.items():
        torch.testing.assert_close(packed[ids], want, rtol=0, atol=1e-4)
        torch.testing.assert_close(padded[ids], want, rtol=0, atol=1e-4)
    # token_loss sums the same per-token losses
    assert packed_sum[1] == alone_sum[1] == sum(len(v) for v in alone.values())
    assert abs(packed_sum[0] - float(sum(v.sum() for v in alone.values()))) < 1e-4 * alone_sum[1]


def test_packing_without_position_reset_would_leak(tiny_model_dir, chat_file):
    """The equality above is meaningful: the same rows packed as one sequence give other per-token losses."""
    tok, rows = _rows(tiny_model_dir, chat_file)
    model = load_model(tiny_model_dir).eval()
    packed = micro_batches(rows[:6], pad_id=tok.pad_token_id, micro_batch_tokens=0, strategy="pack", max_seq_length=256)[0]
    assert len(_examples(packed)) >= 3
    leaky = type(packed)(packed.input_ids, packed.labels, None, torch.arange(packed.input_ids.shape[1])[None], packed.n_examples)
    with torch.no_grad():
        exact = _per_token(model, [packed])
        seen = torch.cat(list(_per_token(model, [leaky], layout=packed).values()))
    first = _examples(packed)[0][1]  # the first example sees nothing before it either way
    gap = (torch.cat(list(exact.values())) - seen).abs()
    assert gap[:first].max() < 1e-4
    assert gap[first:].max() > 100 * 1e-4  # the leak is far above the tolerance of the test above


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
