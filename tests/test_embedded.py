"""The main job on the real embedded model (slow): a short LoRA run learns the demo task's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tailored

EXAMPLES = Path(tailored.__file__).parent / "examples"


@pytest.mark.slow
def test_short_lora_run_on_smollm2(smollm2_dir, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join((EXAMPLES / "triage_train.jsonl").read_text().splitlines(True)[:48]))
    val = tmp_path / "val.jsonl"
    val.write_text("".join((EXAMPLES / "triage_validation.jsonl").read_text().splitlines(True)[:8]))
    result = tailored.train(data=str(train), validation=str(val), output=str(tmp_path / "run"), max_steps=8,
                            batch_size=6, learning_rate_multiplier=2.0, threads=1, eval_every=8, save_every=100)
    m = result.metrics
    assert m["validation_loss"] < 0.7 * m["initial_validation_loss"], m
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["base_model"]["kind"] == "embedded" and manifest["base_model"]["name"] == "smollm2-135m-instruct"
    assert manifest["eos_token"] == "<|im_end|>"
    model = tailored.load(result.run_dir)
    ticket = [{"role": "system", "content": "Triage the support ticket. Answer with JSON only."},
              {"role": "user", "content": "My card was charged twice for the Pro plan. Please help ASAP."}]
    answer = model.chat(ticket, max_new_tokens=40)
    assert answer.strip().startswith("{") and '"category"' in answer, answer
