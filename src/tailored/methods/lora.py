"""LoRA: low-rank updates ``W + (alpha/r)·B·A`` on chosen linear layers (via peft)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tailored.methods.base import Footprint, Serving, register
from tailored.methods.peft_common import PeftMethod
from tailored.models.shapes import ModelShape


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_r: int = Field(16, ge=1, description="Rank of the update matrices.")
    lora_alpha: float = Field(32, gt=0, description="Scale: the update is multiplied by lora_alpha / lora_r.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Layers to adapt: 'all-linear' or names such as q_proj,v_proj."
    )


def target_names(options: LoraOptions) -> str | list[str]:
    """``target_modules`` as peft takes it: "all-linear" or a list of module names."""
    targets = options.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        return [t.strip() for t in targets.split(",") if t.strip()]
    return targets


def lora_config(options: LoraOptions, **extra: Any) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=target_names(options),
        **extra,
    )


def lora_footprint(shape: ModelShape, options: LoraOptions, *, magnitude: bool = False,
                   quantized_linear_bits: float | None = None) -> Footprint:
    """A (r × in) and a (out × r) matrix per targeted linear layer; DoRA (``magnitude``) adds one magnitude per
    output row. Everything trained is added; the base stays frozen."""
    linears = shape.select_linears(target_names(options)).values()
    n = sum(options.lora_r * (i + o) * count for i, o, count in linears)
    if magnitude:
        n += sum(o * count for _, o, count in linears)
    return Footprint(trainable=n, added=n, quantized_linear_bits=quantized_linear_bits)


class Lora(PeftMethod):
    name: ClassVar[str] = "lora"
    summary: ClassVar[str] = "low-rank update matrices on the linear layers; base frozen"
    when: ClassVar[str] = "the default: most of full fine-tuning's quality at ~1-2% of the trainable weights"
    base_learning_rate: ClassVar[float] = 2e-4
    Options: ClassVar[type[BaseModel]] = LoraOptions

    def peft_config(self, options: BaseModel) -> Any:
        return lora_config(options)  # type: ignore[arg-type]

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        return lora_footprint(shape, options)  # type: ignore[arg-type]

    def serving(self, options: BaseModel) -> Serving:
        return Serving("shared_lora")


register(Lora())
