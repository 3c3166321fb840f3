"""DoRA: LoRA on the direction of each weight plus a trained magnitude vector (weight-decomposed LoRA)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from tailored.methods.base import Footprint, register
from tailored.methods.lora import LoraOptions, lora_config, lora_footprint
from tailored.methods.peft_common import PeftMethod
from tailored.models.shapes import ModelShape


class Dora(PeftMethod):
    name: ClassVar[str] = "dora"
    summary: ClassVar[str] = "LoRA on each weight's direction plus one magnitude per output row; base frozen"
    when: ClassVar[str] = "LoRA quality is not quite enough at low rank; costs ~1.5-2x LoRA's step time"
    base_learning_rate: ClassVar[float] = 2e-4
    Options: ClassVar[type[BaseModel]] = LoraOptions  # same settings, same meanings as LoRA

    def peft_config(self, options: BaseModel) -> Any:
        return lora_config(options, use_dora=True)  # type: ignore[arg-type]

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        return lora_footprint(shape, options, magnitude=True)  # type: ignore[arg-type]


register(Dora())
