"""``Method.footprint``: what each method says it trains and adds is what its ``prepare`` really does.

Every registered method, with its default options and with non-default ones, on a real tiny model
and on SmolLM2 built on the meta device (its config, no weights): the footprint's trainable count is
the number of parameters that require grad after ``prepare``, and its added count is what ``prepare``
added to the base. ``tailored methods`` and ``tailored estimate`` report these numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tailored.methods import get_method, method_names
from tailored.methods.base import Footprint, MethodBase, count_parameters, parse_options, register
from tailored.models.shapes import ModelShape, shape_of_folder

# Non-default options: every method once more, with settings that change its count.
OTHER_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("lora", {"lora_r": 4, "target_modules": "q_proj,v_proj"}),
    ("full", {"train_embeddings": False}),
    ("dora", {"lora_r": 2, "target_modules": "o_proj,down_proj"}),
    ("qlora", {"lora_r": 8, "target_modules": "gate_proj,up_proj", "quant_bits": 8}),
    ("ia3", {"ia3_target_modules": "q_proj,down_proj"}),
    ("adapter", {"adapter_placement": "both"}),
    ("adapter", {"adapter_placement": "attention", "bottleneck_size": 8}),
    ("prefix", {"prefix_projection": True, "num_virtual_tokens": 5}),
    ("prompt", {"num_virtual_tokens": 7}),
    ("dpo", {"lora_r": 4, "target_modules": "k_proj"}),
]
CASES = [(name, {}) for name in method_names()] + OTHER_OPTIONS


def test_every_method_has_non_default_cases() -> None:
    assert set(method_names()) <= {name for name, _ in OTHER_OPTIONS}, "add a non-default row to OTHER_OPTIONS"


def _check(load: Any, folder: Path, name: str, settings: dict[str, Any]) -> None:
    method = get_method(name)
    options = parse_options(method, settings)
    shape = shape_of_folder(folder)
    base = load(folder)
    assert shape.n_params == sum(p.numel() for p in base.parameters())
    fp = method.footprint(shape, options)
    trainable, total = count_parameters(method.prepare(base, options))
    assert (fp.trainable, fp.added) == (trainable, total - shape.n_params), (name, settings)


@pytest.mark.parametrize("name,settings", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_footprint_counts_a_prepared_tiny_model(tiny_model_dir: Path, name: str, settings: dict[str, Any]) -> None:
    from tailored.models.load import load_model

    _check(load_model, tiny_model_dir, name, settings)  # real weights, unquantized


@pytest.mark.slow
@pytest.mark.parametrize("name,settings", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_footprint_counts_smollm2_on_the_meta_device(smollm2_dir: Path, name: str, settings: dict[str, Any]) -> None:
    from tailored.testing.tiny import meta_model

    _check(meta_model, smollm2_dir, name, settings)


def test_footprint_fields_answer_what_the_estimate_asks() -> None:
    shape = ModelShape("s", hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=256, tied=True)

    def fp(name: str, **settings: Any) -> Footprint:
        method = get_method(name)
        return method.footprint(shape, parse_options(method, settings))

    assert fp("full").trains_base and not fp("lora").trains_base and fp("full").added == 0
    assert fp("qlora").quantized_linear_bits == pytest.approx(4.127)
    assert fp("qlora", double_quant=False).quantized_linear_bits == 4.5
    assert fp("qlora", quant_bits=8).quantized_linear_bits == 8
    assert fp("lora").quantized_linear_bits is None and fp("dpo").quantized_linear_bits is None
    assert fp("prefix", num_virtual_tokens=9).extra_positions == 9 and fp("prompt").extra_positions == 20
    assert fp("lora").extra_positions == 0
    for name in method_names():  # the contract's consistency: quantization() and footprint agree
        method = get_method(name)
        assert (method.quantization(method.Options()) is None) == (fp(name).quantized_linear_bits is None), name
    with pytest.raises(Exception, match="target_modules nope"):
        fp("lora", target_modules="q_proj,nope")


def test_register_checks_the_footprint() -> None:
    from pydantic import BaseModel

    class NoOptions(BaseModel):
        pass

    class Base(MethodBase):
        summary = when = "x"
        base_learning_rate = 1.0
        Options = NoOptions

        def prepare(self, model, options):  # pragma: no cover - never called
            return model

        save = load = load_state = prepare

    class Missing(Base):
        name = "missing_footprint"

    with pytest.raises(ValueError, match="missing footprint"):
        register(Missing())

    class Quantizes(Base):
        name = "quantizes_silently"

        def footprint(self, shape, options):
            return Footprint(trainable=1, added=1, quantized_linear_bits=4.0)

    with pytest.raises(ValueError, match="disagrees with quantization"):
        register(Quantizes())

    class TrainsNothingAdded(Base):
        name = "trains_base_unsaid"

        def footprint(self, shape, options):
            return Footprint(trainable=shape.n_params, added=0)

    with pytest.raises(ValueError, match="does not train the base"):
        register(TrainsNothingAdded())
    assert not {"missing_footprint", "quantizes_silently", "trains_base_unsaid"} & set(method_names())
