"""Assistant-only labels are exact: every assistant token plus its end-of-turn token, nothing else."""

from __future__ import annotations

import pytest

from tailored.data.records import Example
from tailored.data.stops import stop_token_ids
from tailored.data.tokenize import IGNORE, encode_all, encode_example
from tailored.errors import DataError
from tailored.models.load import load_tokenizer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "the a of"},
    {"role": "assistant", "content": "good day"},
    {"role": "user", "content": "two more"},
    {"role": "assistant", "content": "never this", "weight": 0},
    {"role": "user", "content": "last one"},
    {"role": "assistant", "content": "find water"},
]


def labelled_text(tok, enc) -> str:
    return tok.decode([t for t in enc.labels if t != IGNORE])


def label_runs(enc) -> int:
    """Number of contiguous labelled spans."""
    runs, inside = 0, False
    for t in enc.labels:
        if t != IGNORE and not inside:
            runs += 1
        inside = t != IGNORE
    return runs


def test_chatml_multi_turn_system_and_weight_zero(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    enc = encode_example(tok, Example(3, CONVERSATION))
    assert labelled_text(tok, enc) == "good day<|im_end|>\nfind water<|im_end|>\n"
    assert label_runs(enc) == 2
    # labels are the input ids where set (no shifting here; the loss shifts)
    assert all(lab in (IGNORE, tid) for lab, tid in zip(enc.labels, enc.input_ids))
    assert tok.eos_token_id in enc.labels


def test_chatml_default_system_prompt_is_never_trained(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    enc = encode_example(tok, Example(1, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "good"}]))
    assert "You are a helpful assistant" in tok.decode(enc.input_ids)
    assert labelled_text(tok, enc) == "good<|im_end|>\n"


def test_zephyr_template_labels_answer_and_eos(tiny_zephyr_dir):
    tok = load_tokenizer(tiny_zephyr_dir)
    enc = encode_example(tok, Example(1, CONVERSATION))
    assert labelled_text(tok, enc) == "good day</s>\nfind water</s>\n"
    assert label_runs(enc) == 2
    assert tok.eos_token_id in stop_token_ids(tok)


def test_weight_zero_everywhere_leaves_nothing_to_train(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]
    rows, stats = encode_all(tok, [Example(7, msgs)], max_seq_length=512)
    assert rows == [] and stats.dropped_no_labels == [7]


def test_overlength_is_counted_and_named(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    long = Example(5, [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}])
    short = Example(6, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}])
    rows, stats = encode_all(tok, [long, short], max_seq_length=64)
    assert [r.line for r in rows] == [6]
    assert stats.dropped_too_long[0][0] == 5 and "lines 5" in stats.summary(64)
    rows, stats = encode_all(tok, [long, short], max_seq_length=64, overlength="truncate")
    # the long prompt leaves no answer token inside 64 tokens: counted as such, not silently kept
    assert [r.line for r in rows] == [6] and stats.truncated[0][0] == 5 and stats.dropped_no_labels == [5]
    long_answer = Example(8, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 200}])
    rows, stats = encode_all(tok, [long_answer], max_seq_length=64, overlength="truncate")
    assert len(rows[0]) == 64 and rows[0].n_labels > 0 and stats.truncated == [(8, stats.truncated[0][1])]
    with pytest.raises(DataError, match="line 5"):
        encode_all(tok, [long], max_seq_length=64, overlength="error")


def test_template_without_eos_is_refused(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}" \
                        "{% if add_generation_prompt %}assistant: {% endif %}"
    ex = Example(2, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "good"}])
    with pytest.raises(DataError, match="never learn to stop"):
        encode_all(tok, [ex], max_seq_length=128)


def test_prefix_unstable_template_is_refused(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    # Renders only the last message: earlier turns change when a turn is added.
    tok.chat_template = "{{ messages[-1]['content'] + eos_token }}{% if add_generation_prompt %}>{% endif %}"
    ex = Example(4, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "good"}])
    with pytest.raises(DataError, match="line 4: the chat template is not prefix-stable"):
        encode_example(tok, ex)


def test_text_examples_train_every_token_and_end_with_eos(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    enc = encode_example(tok, Example(1, text="the water"))
    assert enc.input_ids[-1] == tok.eos_token_id
    assert enc.n_labels == len(enc.input_ids)


@pytest.mark.slow
def test_smollm2_template_masks_exactly(smollm2_dir):
    tok = load_tokenizer(smollm2_dir)
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "weight": 0},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6"},
    ]
    enc = encode_example(tok, Example(1, msgs))
    assert labelled_text(tok, enc) == "Hello there!<|im_end|>\n6<|im_end|>\n"
    # the pad token is the EOS token: EOS must still be labelled (masking pads would kill it)
    assert tok.pad_token_id == tok.eos_token_id
    assert sum(1 for t in enc.labels if t == tok.eos_token_id) == 2
    # no default system prompt sneaks into the labels when the user gives none
    enc = encode_example(tok, Example(2, msgs[1:3]))
    assert "SmolLM" in tok.decode(enc.input_ids) and labelled_text(tok, enc) == "Hello there!<|im_end|>\n"
