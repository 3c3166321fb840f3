"""LoRA: low-rank updates ``W + (alpha/r)·B·A`` on chosen linear layers (via peft)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tailored.methods.base import Serving, register
from tailored.methods.peft_common import PeftMethod


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_r: int = Field(16, ge=1, description="Rank of the update matrices.")
    lora_alpha: float = Field(32, gt=0, description="Scale: the update is multiplied by lora_alpha / lora_r.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Layers to adapt: 'all-linear' or names such as q_proj,v_proj."
    )


def lora_config(options: LoraOptions, **extra: Any) -> Any:
    from peft import LoraConfig, TaskType

    targets = options.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets,
        **extra,
    )


class Lora(PeftMethod):
    name: ClassVar[str] = "lora"
    summary: ClassVar[str] = "low-rank update matrices on the linear layers; base frozen"
    when: ClassVar[str] = "the default: most of full fine-tuning's quality at ~1-2% of the trainable weights"
    base_learning_rate: ClassVar[float] = 2e-4
    Options: ClassVar[type[BaseModel]] = LoraOptions

    def peft_config(self, options: BaseModel) -> Any:
        return lora_config(options)  # type: ignore[arg-type]

    def serving(self, options: BaseModel) -> Serving:
        return Serving("shared_lora")


register(Lora())
