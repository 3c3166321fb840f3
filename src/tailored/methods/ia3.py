"""IA3: learned per-channel scaling vectors on keys, values and the MLP's input (via peft)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tailored.methods.base import Footprint, register
from tailored.methods.peft_common import PeftMethod
from tailored.models.shapes import ModelShape

# peft's defaults for Llama-like decoders (TRANSFORMERS_MODELS_TO_IA3_*_MAPPING; T5's k, v, wo are the same layers).
_AUTO_TARGETS = ["k_proj", "v_proj", "down_proj"]
_AUTO_FEEDFORWARD = ["down_proj"]


def _names(value: list[str] | str) -> list[str] | None:
    if value == "auto":
        return None  # peft's per-architecture default (k_proj, v_proj, down_proj for Llama)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


class Ia3Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ia3_target_modules: list[str] | str = Field(
        "auto", description="Layers whose outputs (or inputs, for feed-forward ones) are scaled; auto = peft's default per architecture.")
    ia3_feedforward_modules: list[str] | str = Field(
        "auto", description="Which of ia3_target_modules are feed-forward layers (scaled on their input).")


class Ia3(PeftMethod):
    name: ClassVar[str] = "ia3"
    summary: ClassVar[str] = "one scaling vector per adapted layer (keys, values, MLP); base frozen"
    when: ClassVar[str] = "the smallest adapters (tens of KB) for many tenants; weaker than LoRA on new skills"
    base_learning_rate: ClassVar[float] = 3e-3
    Options: ClassVar[type[BaseModel]] = Ia3Options

    def peft_config(self, options: BaseModel) -> Any:
        from peft import IA3Config, TaskType

        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=_names(options.ia3_target_modules),  # type: ignore[attr-defined]
                         feedforward_modules=_names(options.ia3_feedforward_modules))  # type: ignore[attr-defined]

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        # One vector per adapted layer: over its outputs, or over its inputs for a feed-forward layer.
        targets = shape.select_linears(_names(options.ia3_target_modules) or _AUTO_TARGETS)  # type: ignore[attr-defined]
        feedforward = shape.select_linears(_names(options.ia3_feedforward_modules) or _AUTO_FEEDFORWARD)  # type: ignore[attr-defined]
        n = sum((i if name in feedforward else o) * count for name, (i, o, count) in targets.items())
        return Footprint(trainable=n, added=n)


register(Ia3())
