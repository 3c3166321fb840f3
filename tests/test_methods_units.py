"""The pieces behind the methods: shared option names, the catalog, the CLI, QLoRA's merge guard."""

from __future__ import annotations

import json

import pytest
import torch

from tailored.errors import TailoredError
from tailored.methods import get_method, method_names
from tailored.methods.base import count_parameters, parse_options
from tailored.models.load import load_model


def test_an_option_name_shared_by_methods_means_the_same_thing():
    seen: dict[str, tuple[str, object, str]] = {}
    for name in method_names():
        for opt, field in get_method(name).Options.model_fields.items():
            here = (str(field.annotation), field.description)
            if opt in seen:
                assert seen[opt][:2] == here, f"{opt!r} means different things in {seen[opt][2]} and {name}"
            else:
                seen[opt] = (*here, name)
    assert {"lora_r", "bottleneck_size", "num_virtual_tokens", "quant_bits", "dpo_beta"} <= set(seen)


def test_catalog_counts_match_a_real_prepared_model(tiny_model_dir):
    from tailored.methods.catalog import catalog

    rows = {r.name: r for r in catalog(tiny_model_dir)}
    assert set(rows) == set(method_names())
    for name, row in rows.items():
        method = get_method(name)
        model = method.prepare(load_model(tiny_model_dir), method.Options())  # real weights, unquantized
        assert (row.trainable, row.total) == count_parameters(model), name
        assert row.mergeable == method.mergeable and row.train_memory_bytes > row.adapter_bytes > 0, name
    with pytest.raises(TailoredError, match="quant_bits"):
        parse_options(get_method("qlora"), {"quant_bits": 3})
    assert rows["full"].trainable == rows["full"].total
    assert rows["qlora"].train_memory_bytes < rows["lora"].train_memory_bytes  # the quantized base is smaller
    assert rows["ia3"].trainable < rows["lora"].trainable < rows["full"].trainable
    assert rows["prompt"].trainable < rows["lora"].trainable


def test_methods_command_lists_every_method(tiny_model_dir, capsys):
    from tailored.cli.main import main

    assert main(["methods", "--model", str(tiny_model_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == method_names()
    assert main(["methods", "--model", str(tiny_model_dir)]) == 0
    text = capsys.readouterr().out
    for name in method_names():
        assert f"\n{name}: " in text
    assert "--bottleneck-size 32" in text and "--quant-bits 4" in text


def test_train_flags_cover_every_method_option():
    from tailored.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--data", "x.jsonl", "--method", "adapter", "--bottleneck-size", "8",
                              "--adapter-placement", "both", "--quant-bits", "8", "--num-virtual-tokens", "5",
                              "--dpo-beta", "0.5", "--target-modules", "q_proj,v_proj"])
    assert (args.bottleneck_size, args.adapter_placement, args.quant_bits, args.num_virtual_tokens, args.dpo_beta) == (
        8, "both", 8, 5, 0.5)
    for name in method_names():
        for opt in get_method(name).Options.model_fields:
            assert opt in args._option_names


def test_options_route_to_the_chosen_method_only(tiny_model_dir, chat_file):
    from tailored.config.load import load_train_config
    from tailored.errors import ConfigError
    from tailored.methods import method_options

    cfg = load_train_config({"data": "x", "method": "adapter", "bottleneck_size": 4}, methods=method_options())
    assert cfg.method_options == {"bottleneck_size": 4}
    with pytest.raises(ConfigError, match="belongs to another method"):
        load_train_config({"data": "x", "method": "lora", "bottleneck_size": 4}, methods=method_options())


def test_qlora_quantizes_the_base_and_refuses_to_merge_into_it(tiny_model_dir):
    import bitsandbytes  # noqa: F401  (the quant extra `make test` installs: missing fails, never skips)
    from tailored.methods.qlora import is_quantized

    method = get_method("qlora")
    options = method.Options(lora_r=4)
    base = load_model(tiny_model_dir, **method.base_load_kwargs(options, "cpu"))
    assert is_quantized(base)
    model = method.prepare(base, options)
    with pytest.raises(TailoredError, match="quantized base") as err:
        method.merge(model)
    assert "for_merge=True" in err.value.hint
    plain = method.prepare(load_model(tiny_model_dir), options)
    assert not is_quantized(method.merge(plain))


def test_full_fine_tune_save_is_a_complete_model_folder(tiny_model_dir, tmp_path):
    method = get_method("full")
    model = method.prepare(load_model(tiny_model_dir), method.Options())
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(0.5)
    method.save(model, tmp_path / "w")
    assert (tmp_path / "w" / "config.json").is_file()
    again = load_model(tmp_path / "w")  # loads with plain transformers, no Tailored code needed
    assert torch.equal(again.model.layers[0].mlp.down_proj.weight, model.model.layers[0].mlp.down_proj.weight)
    reloaded = method.load(load_model(tiny_model_dir), tmp_path / "w")
    ids = torch.tensor([[3, 4, 5, 6]])
    assert torch.allclose(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


def test_qlora_gradients_survive_an_eval_pass(tiny_model_dir):
    """bitsandbytes repacks 4-bit weights for CPU inference on the first eval-mode pass (on AVX512-BF16
    CPUs) and then multiplies without autograd; a validation pass must not break training's gradients."""
    import bitsandbytes  # noqa: F401  (the quant extra `make test` installs: missing fails, never skips)
    method = get_method("qlora")
    options = method.Options(lora_r=4)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])

    def grads(eval_first: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = method.prepare(load_model(tiny_model_dir, **method.base_load_kwargs(options, "cpu")), options)
        if eval_first:
            model.eval()
            with torch.no_grad():
                model(input_ids=ids)
            model.train()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.fill_(0.01)
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, after_eval = grads(False), grads(True)
    assert plain.keys() == after_eval.keys()
    for name in plain:
        assert torch.allclose(plain[name], after_eval[name], atol=1e-7), name
