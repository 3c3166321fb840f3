"""The method contract: what every other layer asks a method, and the checks register() makes."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from tailored.methods import get_method, method_names
from tailored.methods.base import Serving, default_method, register
from tailored.methods.lora import Lora

EXPECTED = {  # method: (serving mode, weights format, mergeable, quantization of the default options)
    "lora": ("shared_lora", "peft", True, None),
    "dpo": ("shared_lora", "peft", True, None),
    "qlora": ("standalone", "peft", True, "4-bit nf4"),
    "dora": ("standalone", "peft", True, None),
    "ia3": ("standalone", "peft", True, None),
    "full": ("standalone", "model", True, None),
    "adapter": ("standalone", "custom", False, None),
    "prefix": ("unservable", "peft", False, None),
    "prompt": ("unservable", "peft", False, None),
}


def test_every_method_answers_the_contract():
    assert set(method_names()) == set(EXPECTED)
    for name, (mode, weights, mergeable, quantization) in EXPECTED.items():
        method = get_method(name)
        options = method.Options()
        assert method.serving(options).mode == mode, name
        assert method.weights_format == weights and method.mergeable is mergeable, name
        assert method.quantization(options) == quantization, name
        assert (method.merge_refusal is None) is mergeable, name
        assert (method.objective(options) is not None) is (name == "dpo"), name
        assert method.trains_on == ("preference" if name == "dpo" else "chat"), name
    assert get_method("qlora").quantization(get_method("qlora").Options(quant_bits=8)) == "8-bit"
    assert "tailored chat" in get_method("prefix").serving(get_method("prefix").Options()).reason
    assert default_method("chat") == "lora" and default_method("preference") == "dpo"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


def test_register_refuses_a_plug_in_that_breaks_the_contract():
    class NoContract:
        name: ClassVar[str] = "nocontract"
        Options = _Options

    with pytest.raises(ValueError, match="does not implement the method contract"):
        register(NoContract())  # type: ignore[arg-type]

    class Silent(Lora):
        name: ClassVar[str] = "silent"

        def serving(self, options: BaseModel) -> Serving:
            return Serving("unservable")

    with pytest.raises(ValueError, match="must say why"):
        register(Silent())

    class Custom(Lora):
        name: ClassVar[str] = "custom_shared"
        weights_format = "custom"

    with pytest.raises(ValueError, match="needs peft weights"):
        register(Custom())

    class Twice(Lora):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        register(Twice())
    assert "silent" not in method_names() and "custom_shared" not in method_names()
