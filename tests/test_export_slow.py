"""Export on real weights: the embedded SmolLM2 to GGUF and back, and a QLoRA run merged unquantized."""

from __future__ import annotations

import json

import pytest
import torch

from tailored.export import export_run

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?"]


@torch.no_grad()
def _answers(model: torch.nn.Module, prompts: list[torch.Tensor], stop: list[int]) -> list[list[int]]:
    return [model.generate(input_ids=ids, max_new_tokens=16, do_sample=False, eos_token_id=stop,
                           pad_token_id=stop[0])[0, ids.shape[1]:].tolist() for ids in prompts]


def test_embedded_run_to_gguf_f16_answers_like_the_merged_model(smol_run, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tailored

    run = tailored.load(smol_run)
    merged_dir = export_run(smol_run, tmp_path / "merged").out_dir
    result = export_run(smol_run, tmp_path / "gguf", format="gguf", dtype="f16")
    assert any("copied from the original GGUF" in n for n in result.notes)

    reader = GGUFReader(str(result.main_file))
    fields = reader.fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"  # the original file's pre-tokenizer, not a guess
    assert len(fields["tokenizer.ggml.tokens"].data) == 49152
    assert fields["tokenizer.chat_template"].contents() == run.manifest.chat_template
    assert fields["tokenizer.ggml.eos_token_id"].contents() == run.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert {t.tensor_type.name for t in reader.tensors} == {"F16", "F32"}

    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32)
    from_gguf = AutoModelForCausalLM.from_pretrained(str(result.main_file.parent), gguf_file=result.main_file.name,
                                                     dtype=torch.float32)
    gguf_tok = AutoTokenizer.from_pretrained(str(result.main_file.parent), gguf_file=result.main_file.name)
    prompts = [torch.tensor([run.prompt_ids([{"role": "user", "content": p}])]) for p in PROMPTS]
    for p, ids in zip(PROMPTS, prompts):
        text = gguf_tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        assert gguf_tok(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    want = _answers(merged, prompts, run.stop_ids)
    assert want == _answers(run.model, prompts, run.stop_ids)  # merging changed nothing
    assert want == _answers(from_gguf, prompts, run.stop_ids)
    assert all(a[-1] in run.stop_ids for a in want), "answers must end on a stop token"
    with torch.no_grad():
        delta = (merged(prompts[0]).logits - from_gguf(prompts[0]).logits).abs().max().item()
    assert delta < 0.5  # f16 rounding of 30 layers; a wrong tensor layout gives deltas of 10+


def test_qlora_run_merges_into_the_unquantized_base_and_says_so(tiny_model_dir, tmp_path):
    import bitsandbytes  # noqa: F401  (the quant extra `make test` installs: missing fails, never skips)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import tailored
    from tailored.testing.tiny import write_chat_dataset

    data = write_chat_dataset(tmp_path / "train.jsonl", n=12)
    run = tailored.train(data=str(data), model=str(tiny_model_dir), method="qlora", max_steps=1,
                         learning_rate_multiplier=50, output=str(tmp_path / "run")).run_dir
    result = export_run(run, tmp_path / "merged")
    assert any("4-bit" in n and "dequantized" in n for n in result.notes)
    assert "4-bit" in (result.out_dir / "README.md").read_text()
    config = json.loads((result.out_dir / "config.json").read_text())
    assert "quantization_config" not in config
    merged = AutoModelForCausalLM.from_pretrained(str(result.out_dir))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(run / "adapter"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    ids = torch.tensor([[1, 40, 50, 60, 70, 2]])
    with torch.no_grad():
        assert (merged(ids).logits - reference(ids).logits).abs().max().item() < 1e-4
        assert (merged(ids).logits - base(ids).logits).abs().max().item() > 1e-3, "the adapter should not be zero"
