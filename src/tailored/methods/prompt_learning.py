"""Prefix tuning and prompt tuning (via peft): trained virtual tokens, the base untouched.

Both add state to every forward pass instead of changing weights (prefix: keys/values in every
layer; prompt: embeddings before the input), so there is nothing to merge: a run is served through
``method.load`` (peft attaches the virtual tokens to the base). Resuming rebuilds a fresh trainable
config and copies the saved weights in (``PeftMethod.load_state``), because peft refuses to reload
prompt-learning adapters as trainable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from tailored.errors import CheckpointError
from tailored.methods.base import Footprint, Serving, register
from tailored.methods.peft_common import PeftMethod
from tailored.models.shapes import ModelShape


class PromptLearning(PeftMethod):
    """What prefix and prompt tuning share: resume by copying the virtual tokens in, no merge, not served."""

    def serving(self, options: BaseModel) -> Serving:
        return Serving("unservable", f"{self.name} (prompt learning) adds virtual tokens, which the server's KV-cache "  # type: ignore[attr-defined]
                                     "decoder does not support; use `tailored chat RUN` instead")

    def load_state(self, model: torch.nn.Module, folder: Path) -> None:
        # peft stores the virtual tokens as one tensor, ``prompt_embeddings``, and loads it into the prompt
        # encoder (strictly, so a wrong num_virtual_tokens fails); the generic check in PeftMethod would
        # report that key as "unexpected", since it is not a parameter name of the model.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = Path(folder) / "adapter_model.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing", hint="the checkpoint is incomplete; resume from an earlier one")
        state = load_file(str(path))
        if set(state) != {"prompt_embeddings"}:
            raise CheckpointError(f"{path}: expected only virtual-token weights, found {sorted(state)[:3]}",
                                  hint="the checkpoint belongs to another method")
        try:
            set_peft_model_state_dict(model, state)
        except RuntimeError as exc:  # shape mismatch
            raise CheckpointError(f"{path}: {str(exc).splitlines()[0]}",
                                  hint="the checkpoint was trained with another num_virtual_tokens") from exc


class PrefixOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_virtual_tokens: int = Field(20, ge=1, description="Virtual tokens the method trains (prefix length or soft-prompt length).")
    prefix_projection: bool = Field(False, description="Prefix tuning: produce the prefix through a trained MLP (more parameters, steadier training).")


class PromptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_virtual_tokens: int = Field(20, ge=1, description="Virtual tokens the method trains (prefix length or soft-prompt length).")
    prompt_init: Literal["sample_vocab", "random"] = Field(
        "sample_vocab", description="Prompt tuning: start the soft prompt from random vocabulary embeddings or random values.")


class Prefix(PromptLearning):
    name: ClassVar[str] = "prefix"
    summary: ClassVar[str] = "trained key/value vectors prepended in every attention layer"
    when: ClassVar[str] = "steering style/format with tiny adapters and no change to the base; weak on new knowledge"
    merge_refusal: ClassVar[str | None] = "its trained key/value vectors are extra attention positions, not a weight change"
    base_learning_rate: ClassVar[float] = 1e-2
    Options: ClassVar[type[BaseModel]] = PrefixOptions

    def peft_config(self, options: BaseModel) -> Any:
        from peft import PrefixTuningConfig, TaskType

        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=options.num_virtual_tokens,  # type: ignore[attr-defined]
                                  prefix_projection=options.prefix_projection)  # type: ignore[attr-defined]

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        # peft sizes each virtual token's keys and values by the key/value width (kv_heads · head_dim, for
        # grouped-query attention too): one embedding of n × (layers · 2 · kv), or with prefix_projection an
        # n × kv embedding through kv → kv → layers · 2 · kv linear layers (encoder_hidden_size = kv).
        n, kv, out = options.num_virtual_tokens, shape.kv_dim, shape.layers * 2 * shape.kv_dim  # type: ignore[attr-defined]
        count = n * kv + (kv * kv + kv) + (kv * out + out) if options.prefix_projection else n * out  # type: ignore[attr-defined]
        return Footprint(trainable=count, added=count, extra_positions=n)


class Prompt(PromptLearning):
    name: ClassVar[str] = "prompt"
    summary: ClassVar[str] = "a trained soft prompt (input embeddings) prepended to every input"
    when: ClassVar[str] = "the fewest trainable weights of all; needs larger models or more steps to work well"
    merge_refusal: ClassVar[str | None] = "its soft prompt is extra input embeddings, not a weight change"
    base_learning_rate: ClassVar[float] = 3e-2
    Options: ClassVar[type[BaseModel]] = PromptOptions

    def peft_config(self, options: BaseModel) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        init = PromptTuningInit.SAMPLE_VOCAB if options.prompt_init == "sample_vocab" else PromptTuningInit.RANDOM  # type: ignore[attr-defined]
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=options.num_virtual_tokens,  # type: ignore[attr-defined]
                                  prompt_tuning_init=init)

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        n = options.num_virtual_tokens * shape.hidden  # type: ignore[attr-defined]  # one input embedding per virtual token
        return Footprint(trainable=n, added=n, extra_positions=options.num_virtual_tokens)  # type: ignore[attr-defined]


register(Prefix())
register(Prompt())
