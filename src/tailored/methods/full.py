"""Full fine-tuning: every weight of the base is trained; the result is a complete model folder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from tailored.errors import CheckpointError
from tailored.methods.base import Footprint, MethodBase, register
from tailored.models.shapes import ModelShape


class FullOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_embeddings: bool = Field(True, description="Also train the token embeddings (and a tied output head).")


def _weights_file(folder: Path) -> Path:
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing", hint="is this the weights folder of a full fine-tune?")
    return path


class Full(MethodBase):
    name: ClassVar[str] = "full"
    summary: ClassVar[str] = "every weight of the model"
    when: ClassVar[str] = "lots of data or a big shift in behaviour, and memory for the optimizer state of every weight"
    weights_format: ClassVar[str] = "model"  # a complete transformers model folder; nothing to merge
    base_learning_rate: ClassVar[float] = 2e-5
    Options: ClassVar[type[BaseModel]] = FullOptions

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        # Without the embeddings, a tied output head (the same tensor) is frozen too; an untied one still trains.
        frozen = 0 if options.train_embeddings else shape.vocab * shape.hidden  # type: ignore[attr-defined]
        return Footprint(trainable=shape.n_params - frozen, added=0, trains_base=True)

    def prepare(self, model: torch.nn.Module, options: BaseModel) -> torch.nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        if not options.train_embeddings:  # type: ignore[attr-defined]
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        # A complete transformers model folder (config + safetensors): loadable by any HF tool.
        model.save_pretrained(str(folder), safe_serialization=True, max_shard_size="100GB")

    def load(self, base: torch.nn.Module, folder: Path, *, trainable: bool = False) -> torch.nn.Module:
        self.load_state(base, folder)
        for p in base.parameters():
            p.requires_grad_(trainable)
        return base

    def load_state(self, model: torch.nn.Module, folder: Path) -> None:
        from safetensors.torch import load_file

        path = _weights_file(folder)
        state = load_file(str(path))
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {k for k in missing if _is_tied(model, k)}
        if unexpected or set(missing) - tied:
            raise CheckpointError(f"{path} does not match the base model (missing {sorted(set(missing) - tied)[:3]}, "
                                  f"unexpected {sorted(unexpected)[:3]})",
                                  hint="the weights belong to another base model; check the run's manifest")
        if tied and hasattr(model, "tie_weights"):
            model.tie_weights()

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        return model


def _is_tied(model: torch.nn.Module, key: str) -> bool:
    """Whether ``key`` is a weight shared with another (saved once, e.g. a tied output head)."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return False
    out = model.get_output_embeddings()
    return out is not None and key.endswith("lm_head.weight") and out.weight is model.get_input_embeddings().weight


register(Full())
