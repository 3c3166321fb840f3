"""The loop's loss (hidden states captured at the final norm, last L positions) equals peft's own loss
for the prompt-learning methods, where peft prepends virtual tokens or past keys/values."""

from __future__ import annotations

import pytest
import torch

from tailored.data.batching import micro_batches
from tailored.data.readers import read_records
from tailored.data.tokenize import encode_all
from tailored.methods import get_method
from tailored.models.load import load_model, load_tokenizer
from tailored.train.forward import token_loss


@pytest.mark.parametrize("method_name", ["prefix", "prompt", "lora"])
def test_token_loss_equals_peft_loss(method_name, tiny_model_dir, chat_file):
    method = get_method(method_name)
    torch.manual_seed(0)
    model = method.prepare(load_model(tiny_model_dir), method.Options())
    with torch.no_grad():  # make the method's weights matter (LoRA starts as a no-op)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    tok = load_tokenizer(tiny_model_dir)
    rows, _ = encode_all(tok, read_records(chat_file).examples[:6], max_seq_length=256)
    batch = micro_batches(rows, pad_id=tok.pad_token_id, micro_batch_tokens=10_000)[0]  # padded, lengths differ
    assert batch.attention_mask is not None and int(batch.attention_mask.sum()) < batch.attention_mask.numel()
    model.eval()
    with torch.no_grad():
        ours = token_loss(model, batch)
        theirs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    assert ours.n_tokens == batch.n_labels
    assert float(ours.loss_sum) / ours.n_tokens == pytest.approx(float(theirs), rel=1e-5)
