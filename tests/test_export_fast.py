"""Export on tiny random models: merged HF folder, adapter checks, GGUF f16/q8_0, atomic output, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tailored.export import ExportError, export_run
from tailored.export.adapter import check_adapter_config
from tailored.data.stops import end_of_turn_id, stop_token_ids

PROMPTS = ["billing refund the", "login password bug crash", "shipping order"]


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoRA run trained with a high learning rate, so the adapter clearly changes the model."""
    import tailored
    from tailored.testing.tiny import write_chat_dataset

    root = tmp_path_factory.mktemp("export")
    data = write_chat_dataset(root / "train.jsonl", n=24)
    result = tailored.train(data=str(data), model=str(tiny_model_dir), max_steps=4, output=str(root / "run"),
                            learning_rate_multiplier=50)
    return result.run_dir


@pytest.fixture(scope="module")
def exports(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each format exported once (shared by the tests below)."""
    root = tmp_path_factory.mktemp("exported")
    out = {}
    for fmt, dtype in (("merged", None), ("adapter", None), ("gguf", "f16"), ("gguf", "q8_0")):
        key = fmt if fmt != "gguf" else f"gguf-{dtype}"
        out[key] = export_run(lora_run, root / key, format=fmt, dtype=dtype).out_dir
    return out


def _prompt_ids(run: Path, text: str) -> torch.Tensor:
    from tailored.config.manifest import RunFolder
    from tailored.models.load import load_tokenizer

    tok = load_tokenizer(run / "tokenizer")
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], chat_template=RunFolder(run).read().chat_template,
                                       tokenize=False, add_generation_prompt=True)
    return torch.tensor([tok(rendered, add_special_tokens=False)["input_ids"]])


@torch.no_grad()
def test_merged_loads_with_plain_transformers_and_equals_unmerged_run(lora_run, exports, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    import tailored

    unmerged = tailored.load(lora_run).model
    merged = AutoModelForCausalLM.from_pretrained(str(exports["merged"]))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    for text in PROMPTS:
        ids = _prompt_ids(lora_run, text)
        want, got = unmerged(ids).logits, merged(ids).logits
        assert (want - got).abs().max().item() < 1e-4
        assert (want - base(ids).logits).abs().max().item() > 1e-2, "the adapter should change the model"
        greedy = {"max_new_tokens": 8, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
        assert unmerged.generate(input_ids=ids, **greedy).tolist() == merged.generate(input_ids=ids, **greedy).tolist()


def test_merged_folder_carries_template_stop_tokens_card_and_record(lora_run, exports):
    from transformers import AutoTokenizer, GenerationConfig

    from tailored.models.load import file_sha256
    from tailored.config.manifest import RunFolder

    manifest = RunFolder(lora_run).read().model_dump()
    out = exports["merged"]
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == manifest["chat_template"]
    eos = GenerationConfig.from_pretrained(str(out)).eos_token_id
    eos = [eos] if isinstance(eos, int) else eos
    assert set(manifest["eos_token_ids"]) <= set(eos)
    card = (out / "README.md").read_text()
    assert manifest["base_model"]["name"] in card and "lora" in card and "learning_rate" in card
    assert manifest["data"]["train"]["sha256"][:16] in card
    record = json.loads((out / "tailored_export.json").read_text())
    assert record["format"] == "merged" and record["dtype"] == "f32" and record["method"]["name"] == "lora"
    assert record["run"]["manifest_sha256"] == file_sha256(lora_run / "manifest.json")
    assert record["files"]["model.safetensors"]["sha256"] == file_sha256(out / "model.safetensors")
    assert not list(out.parent.glob(".*tmp-*")), "no temporary folder may be left behind"


def test_stop_tokens_add_the_templates_end_of_turn(tiny_model_dir, tiny_zephyr_dir):
    from tailored.models.load import load_tokenizer

    chatml = load_tokenizer(tiny_model_dir)
    im_end = chatml.convert_tokens_to_ids("<|im_end|>")
    endoftext = chatml.convert_tokens_to_ids("<|endoftext|>")
    assert end_of_turn_id(chatml, chatml.chat_template) == im_end
    # A model whose eos is <|endoftext|> but whose template closes turns with <|im_end|> must stop on both.
    assert stop_token_ids(chatml, chatml.chat_template, recorded=[endoftext]) == sorted(
        {endoftext, im_end})
    zephyr = load_tokenizer(tiny_zephyr_dir)
    assert end_of_turn_id(zephyr, zephyr.chat_template) == zephyr.eos_token_id
    assert end_of_turn_id(zephyr, "{% for m in messages %}{{ m['content'] }}\n{% endfor %}") is None


def test_adapter_export_is_peft_loadable_with_template(lora_run, exports, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailored.config.manifest import RunFolder

    out = exports["adapter"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tailored_export.json"} <= {
        p.name for p in out.iterdir()}
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == RunFolder(lora_run).read().chat_template
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(out))
    merged = AutoModelForCausalLM.from_pretrained(str(exports["merged"]))
    ids = _prompt_ids(lora_run, PROMPTS[0])
    with torch.no_grad():
        assert (model(ids).logits - merged(ids).logits).abs().max().item() < 1e-4
    record = json.loads((out / "tailored_export.json").read_text())
    assert any("local path" in n for n in record["notes"])  # base_model_name_or_path is a local folder


def test_adapter_checks_name_what_vllm_rejects(lora_run, tmp_path):
    clean = {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"], "bias": "none"}
    assert check_adapter_config(clean) == []
    problems = " | ".join(check_adapter_config({**clean, "r": 64, "use_dora": True, "modules_to_save": ["lm_head"],
                                                "target_modules": ["q_proj", "embed_tokens"]}))
    for needle in ("modules_to_save", "use_dora", "--max-lora-rank 64", "embed_tokens"):
        assert needle in problems
    assert "only LoRA" in check_adapter_config({"peft_type": "IA3"})[0]

    # The same check runs on export: a run whose adapter saves full layers is flagged.
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    cfg_path = run / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "modules_to_save": ["lm_head"]}))
    flag = {"name": "overfitting", "verdict": "red", "summary": "validation loss rose 40% after step 2",
            "evidence": {}, "fixes": ["train fewer epochs"]}
    (run / "red_flags.json").write_text(json.dumps({"level": "curves", "verdict": "red", "flags": [flag]}))
    result = export_run(run, tmp_path / "out", format="adapter")
    assert any("modules_to_save" in w for w in result.warnings)
    assert any("RED" in w and "validation loss rose 40%" in w for w in result.warnings)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "modules_to_save" in card and "## Red flags" in card
    assert "**red** overfitting: validation loss rose 40% after step 2 Fix: train fewer epochs" in card


def test_card_shows_the_red_flags_written_after_training(lora_run, tmp_path):
    from tailored.eval.aftertrain import check_run

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    written = check_run(run, "curves", say=None)  # the real producer of red_flags.json
    result = export_run(run, tmp_path / "out", format="adapter")
    card = (result.out_dir / "README.md").read_text()
    assert f"Overall: **{written['verdict']}**" in card
    for flag in written["flags"]:
        assert f"**{flag['verdict']}** {flag['name']}" in card


def test_non_mergeable_method_points_to_adapter_format(tiny_model_dir, tmp_path):
    import tailored
    from tailored.testing.tiny import write_chat_dataset

    data = write_chat_dataset(tmp_path / "train.jsonl", n=12)
    run = tailored.train(data=str(data), model=str(tiny_model_dir), method="prefix", max_steps=1,
                         output=str(tmp_path / "run"), num_virtual_tokens=4).run_dir
    for fmt in ("merged", "gguf"):
        with pytest.raises(ExportError) as err:
            export_run(run, tmp_path / fmt, format=fmt)
        assert "prefix" in err.value.message and "--format adapter" in (err.value.hint or "")
        assert not (tmp_path / fmt).exists() and not list(tmp_path.glob(".*tmp-*"))
    result = export_run(run, tmp_path / "adapter", format="adapter")
    assert any("only LoRA" in w for w in result.warnings)


def _gguf_fields(path: Path) -> tuple[dict, dict]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.tokens")}
    tensors = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in reader.tensors}
    return fields, tensors


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_gguf_file_metadata_and_tensors(lora_run, exports, dtype):
    from transformers import AutoConfig

    from tailored.config.manifest import RunFolder

    manifest = RunFolder(lora_run).read().model_dump()
    config = AutoConfig.from_pretrained(manifest["base_model"]["path"])
    path = exports[f"gguf-{dtype}"] / f"model-{dtype}.gguf"
    fields, tensors = _gguf_fields(path)
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.chat_template"] == manifest["chat_template"]
    assert fields["tokenizer.ggml.eos_token_id"] in manifest["eos_token_ids"]
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["llama.block_count"] == config.num_hidden_layers
    assert fields["general.file_type"] == {"f16": 1, "q8_0": 7}[dtype]
    h, kv = config.hidden_size, config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    assert tensors["token_embd.weight"][0] == (h, config.vocab_size)
    assert tensors["blk.0.attn_k.weight"][0] == (h, kv)
    assert tensors["blk.1.ffn_down.weight"][0] == (config.intermediate_size, h)
    assert tensors["blk.0.attn_q.weight"][1] == {"f16": "F16", "q8_0": "Q8_0"}[dtype]
    assert tensors["output_norm.weight"][1] == "F32"
    assert "output.weight" not in tensors  # tied embeddings are not stored twice
    assert len(tensors) == 2 + 9 * config.num_hidden_layers


@pytest.mark.parametrize("dtype,tolerance", [("f16", 5e-3), ("q8_0", 0.1)])
@torch.no_grad()
def test_gguf_round_trips_through_transformers(lora_run, exports, dtype, tolerance):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailored.config.manifest import RunFolder

    folder, name = exports[f"gguf-{dtype}"], f"model-{dtype}.gguf"
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    merged = AutoModelForCausalLM.from_pretrained(str(exports["merged"]))
    assert tok.chat_template == RunFolder(lora_run).read().chat_template
    # Weight by weight (this catches a wrong q/k permutation that a tiny random model's logits barely show).
    want_sd = merged.state_dict()
    for name, got_w in model.state_dict().items():
        ref = want_sd[name]
        assert ((got_w - ref).norm() / ref.norm()).item() < {"f16": 1e-3, "q8_0": 1e-2}[dtype], name
    for text in PROMPTS:
        ids = _prompt_ids(lora_run, text)
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        assert tok(rendered, add_special_tokens=False)["input_ids"] == ids[0].tolist()  # same tokenizer inside
        want, got = merged(ids).logits, model(ids).logits
        assert (want - got).abs().max().item() < tolerance
        if dtype == "f16":
            greedy = {"max_new_tokens": 8, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
            assert merged.generate(input_ids=ids, **greedy).tolist() == model.generate(input_ids=ids, **greedy).tolist()
        else:
            assert (want.argmax(-1) == got.argmax(-1)).float().mean().item() >= 0.9


def test_output_folder_is_refused_then_replaced_with_force(lora_run, tmp_path):
    out = tmp_path / "out"
    export_run(lora_run, out, format="adapter")
    (out / "extra.txt").write_text("left by an earlier export")
    with pytest.raises(ExportError, match="not empty"):
        export_run(lora_run, out, format="adapter")
    assert (out / "extra.txt").is_file()
    export_run(lora_run, out, format="adapter", force=True)
    assert not (out / "extra.txt").exists() and (out / "adapter_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing half-written or set aside remains

    # --force never deletes a folder that is not an export (a run folder, a home folder, a typo).
    for victim in (lora_run, tmp_path):
        with pytest.raises(ExportError, match="not a previous export"):
            export_run(lora_run, victim, format="adapter", force=True)
    assert (lora_run / "manifest.json").is_file()


def test_dtype_is_checked_per_format(lora_run, tmp_path):
    with pytest.raises(ExportError, match="not available for --format adapter"):
        export_run(lora_run, tmp_path / "a", format="adapter", dtype="f16")
    with pytest.raises(ExportError, match="gguf writes"):
        export_run(lora_run, tmp_path / "g", format="gguf", dtype="bf16")
    with pytest.raises(ExportError, match="not known"):
        export_run(lora_run, tmp_path / "x", format="onnx")


def test_cli_export(lora_run, tmp_path, capsys):
    from tailored.cli.main import main

    assert main(["export", str(lora_run), "-o", str(tmp_path / "g"), "--format", "gguf", "--dtype", "q8_0", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dtype"] == "q8_0" and Path(shown["main_file"]).is_file()
    assert main(["export", str(lora_run), "-o", str(tmp_path / "g"), "--format", "gguf"]) != 0
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err


def test_adapter_base_reference_points_to_the_hub_id_when_there_is_one():
    from tailored.config.manifest import BaseModelRecord
    from tailored.export.adapter import fix_base_reference

    def record(kind: str, spec: str) -> BaseModelRecord:
        return BaseModelRecord(kind=kind, spec=spec, name=spec, path="/models/x", content_hash="0" * 64)

    hub = record("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    config, notes = fix_base_reference({"base_model_name_or_path": "/root/.cache/x"}, hub)
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and notes
    local = record("embedded", "smollm2")
    config, notes = fix_base_reference({"base_model_name_or_path": "/root/.cache/x"}, local)
    assert config["base_model_name_or_path"] == "/root/.cache/x" and "dequantized" in notes[0]


def test_gguf_refuses_architectures_it_cannot_write():
    from transformers import Qwen2Config

    from tailored.export.gguf import _check_architecture

    with pytest.raises(ExportError, match="qwen2") as err:
        _check_architecture(Qwen2Config())
    assert "--format merged" in (err.value.hint or "")


def test_gguf_folder_has_an_ollama_modelfile_with_the_stop_tokens(exports):
    text = (exports["gguf-f16"] / "Modelfile").read_text()
    assert text.startswith("FROM ./model-f16.gguf") and 'PARAMETER stop "<|im_end|>"' in text


def test_bf16_base_merges_in_bf16_bit_identical_to_an_fp32_merge(tmp_path):
    """A base stored in bf16 is merged in bf16 (half the memory) without peft's double rounding."""
    from safetensors.torch import load_file

    import tailored
    from tailored.testing.tiny import save_tiny_model, write_chat_dataset

    base = save_tiny_model(tmp_path / "base")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16).save_pretrained(str(base))
    data = write_chat_dataset(tmp_path / "train.jsonl", n=12)
    run = tailored.train(data=str(data), model=str(base), max_steps=2, learning_rate_multiplier=50,
                         output=str(tmp_path / "run")).run_dir
    auto = export_run(run, tmp_path / "auto")
    assert auto.dtype == "bf16"
    export_run(run, tmp_path / "f32", dtype="f32")
    got, want = load_file(str(tmp_path / "auto" / "model.safetensors")), load_file(str(tmp_path / "f32" / "model.safetensors"))
    assert all(torch.equal(got[k], want[k].to(torch.bfloat16)) for k in want)
    assert any(not torch.equal(want[k].to(torch.bfloat16), t) for k, t in load_file(str(base / "model.safetensors")).items())


def test_fast_metadata_reader_agrees_with_gguf_reader(exports):
    from gguf import GGUFReader

    from tailored.export.gguf import read_metadata

    path = exports["gguf-q8_0"] / "model-q8_0.gguf"
    want = {k: (f.contents(), int(f.types[0])) for k, f in GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}
    got = {key: (value, vtype) for key, value, vtype, _ in read_metadata(path)}
    assert got.keys() == want.keys()
    for key, (value, vtype) in want.items():
        assert got[key][1] == vtype
        assert got[key][0] == pytest.approx(value) if isinstance(value, float) else got[key][0] == value, key
    with pytest.raises(ExportError, match="not a GGUF"):
        read_metadata(exports["gguf-q8_0"] / "README.md")


def test_gguf_base_metadata_is_copied_from_the_original_file_unless_it_changed(exports, tmp_path, monkeypatch):
    """A run on a .gguf base re-exports with the original file's metadata; a changed file is noticed."""
    import tailored
    from tailored.testing.tiny import write_chat_dataset

    monkeypatch.setenv("TAILORED_HOME", str(tmp_path / "home"))
    original = tmp_path / "base.gguf"
    shutil.copy(exports["gguf-f16"] / "model-f16.gguf", original)
    data = write_chat_dataset(tmp_path / "train.jsonl", n=12)
    run = tailored.train(data=str(data), model=str(original), max_steps=1, output=str(tmp_path / "run2")).run_dir
    result = export_run(run, tmp_path / "out", format="gguf")
    assert any("copied from the original GGUF base.gguf" in n for n in result.notes) and not result.warnings
    fields, _ = _gguf_fields(result.main_file)
    assert fields["tailored.source_run"] == "run2"  # this export's, not the base file's ("run")
    assert fields["tokenizer.ggml.pre"] == "gpt-2" and fields["general.file_type"] == 1

    with open(original, "ab") as f:
        f.write(b"\0")  # the file is no longer the one training used
    result = export_run(run, tmp_path / "out2", format="gguf")
    assert any("changed since training" in w for w in result.warnings)
    assert not any("copied from the original" in n for n in result.notes)
