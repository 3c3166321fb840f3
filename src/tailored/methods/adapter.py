"""Bottleneck adapters as a method: small MLPs after attention and/or MLP blocks (see :mod:`.bottleneck`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from tailored.methods import bottleneck
from tailored.methods.base import Footprint, MethodBase, register
from tailored.models.shapes import ModelShape

SITES_PER_LAYER = {"mlp": 1, "attention": 1, "both": 2}


class AdapterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bottleneck_size: int = Field(32, ge=1, description="Width of each adapter's hidden layer.")
    adapter_placement: Literal["mlp", "attention", "both"] = Field(
        "mlp", description="Where adapters go: after each MLP (Pfeiffer), after attention, or both (Houlsby).")
    adapter_activation: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="Nonlinearity inside the adapter.")


def _config(options: BaseModel) -> dict[str, Any]:
    return {"method": "adapter", "bottleneck_size": options.bottleneck_size,  # type: ignore[attr-defined]
            "placement": options.adapter_placement, "activation": options.adapter_activation}  # type: ignore[attr-defined]


class Adapter(MethodBase):
    name: ClassVar[str] = "adapter"
    summary: ClassVar[str] = "small bottleneck MLPs after attention and/or MLP blocks; base frozen"
    when: ClassVar[str] = "many tasks on one frozen base with modular, swappable adapters; adds a little inference latency"
    merge_refusal: ClassVar[str | None] = "each adapter is a nonlinear MLP, which no weight matrix of the base can absorb"
    base_learning_rate: ClassVar[float] = 1e-3
    Options: ClassVar[type[BaseModel]] = AdapterOptions

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        # Each adapter: down (hidden → b, with bias) and up (b → hidden, with bias); see bottleneck.inject.
        h, b = shape.hidden, options.bottleneck_size  # type: ignore[attr-defined]
        n = shape.layers * SITES_PER_LAYER[options.adapter_placement] * (2 * h * b + b + h)  # type: ignore[attr-defined]
        return Footprint(trainable=n, added=n)

    def prepare(self, model: torch.nn.Module, options: BaseModel) -> torch.nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        config = _config(options)
        bottleneck.inject(model, config)
        model.tailored_bottleneck_config = config  # read back by save()
        return model

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        bottleneck.save(model, folder, model.tailored_bottleneck_config)

    def load(self, base: torch.nn.Module, folder: Path, *, trainable: bool = False) -> torch.nn.Module:
        config = bottleneck.read_config(folder)
        for p in base.parameters():
            p.requires_grad_(False)
        params = bottleneck.inject(base, config)
        base.tailored_bottleneck_config = {k: config[k] for k in ("method", "bottleneck_size", "placement", "activation")}
        bottleneck.load_state(base, folder)
        for p in params:
            p.requires_grad_(trainable)
        return base

    def load_state(self, model: torch.nn.Module, folder: Path) -> None:
        bottleneck.load_state(model, folder)


register(Adapter())
