"""QLoRA on the embedded SmolLM2 with bitsandbytes' CPU backend: trains on an NF4 base, merges into an fp copy."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tailored
from tailored.errors import TailoredError
from tailored.methods import get_method
from tailored.methods.runs import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, smollm2_dir):
    import bitsandbytes  # noqa: F401  (the quant extra `make test` installs: missing fails, never skips)
    root = tmp_path_factory.mktemp("qlora")
    rows = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
            for w in ("apple", "river", "cloud", "stone", "green", "seven", "bread", "light", "north", "paper", "glass", "music")]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tailored.train(data=str(data), model="smollm2", method="qlora", lora_r=4, target_modules="q_proj,v_proj",
                          max_steps=3, batch_size=4, max_seq_length=64, output=str(root / "run"), threads=1)


def test_qlora_trains_on_a_4bit_base_and_merges_into_an_fp_copy(qlora_run):
    from tailored.methods.qlora import is_quantized

    run = qlora_run.run_dir
    manifest = qlora_run.manifest.model_dump()
    # rank 4 on q_proj (576->576) and v_proj (576->192) in 30 layers
    assert manifest["method"]["options"]["quant_bits"] == 4
    assert manifest["parameters"]["trainable"] == 30 * 4 * ((576 + 576) + (576 + 192))
    losses = [h["loss"] for h in qlora_run.loop.history if h["split"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)

    quantized, tok, _ = load_run(run)  # served as trained: NF4 base + LoRA
    assert is_quantized(quantized)
    fp, _, _ = load_run(run, for_merge=True)  # merges always start from the unquantized base
    assert not is_quantized(fp)
    ids = tok("Say river.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        unmerged = fp(input_ids=ids).logits
        q_logits = quantized(input_ids=ids).logits
    method = get_method("qlora")
    with pytest.raises(TailoredError, match="quantized base"):
        method.merge(quantized)
    merged = method.merge(fp)
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
    assert torch.allclose(merged_logits, unmerged, atol=1e-3)
    # NF4 is an approximation of the base: close on the next token, not equal
    assert (q_logits - unmerged).abs().max() > 1e-3
    assert q_logits[0, -1].argmax() == unmerged[0, -1].argmax()
    assert isinstance(tailored.load(run).chat("Say river.", max_new_tokens=3), str)
