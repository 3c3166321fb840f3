"""Bottleneck adapters (Houlsby / Pfeiffer), written out because the ``adapters`` package pins an old transformers.

An adapter is ``h + up(act(down(h)))`` applied to the output of a transformer sub-block, before that
block's residual addition. ``up`` starts at zero, so a freshly adapted model computes exactly what
the base computes. Placement ``mlp`` after each MLP is Pfeiffer's layout, ``both`` (after attention
and after the MLP) is Houlsby's.

The adapters hang off the blocks they follow (``layers.3.mlp.bottleneck_adapter``) and act through
forward hooks, so the base's own module names and weights stay untouched, and saving writes only the
adapter weights plus a JSON config that describes them (a self-describing folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailored.errors import CheckpointError, ModelError

ATTR = "bottleneck_adapter"
CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "bottleneck_adapter.safetensors"
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    """``x + up(act(down(x)))`` with ``up`` initialised to zero."""

    def __init__(self, hidden: int, bottleneck: int, activation: str = "relu") -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x.to(self.down.weight.dtype)))).to(x.dtype)


def _hook(module: nn.Module, _inputs: Any, output: Any) -> Any:
    adapter = getattr(module, ATTR)
    if isinstance(output, tuple):  # attention blocks return (hidden, weights, ...)
        return (adapter(output[0]),) + tuple(output[1:])
    return adapter(output)


def _find(layer: nn.Module, names: tuple[str, ...], what: str, index: int) -> nn.Module:
    for name in names:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ModelError(f"decoder layer {index} has no {what} block (looked for {', '.join(names)})",
                     hint="bottleneck adapters support Llama-style decoders; use --method lora for this model")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for owner in (decoder, getattr(model, "transformer", None), getattr(model, "model", None)):
        for name in ("layers", "h", "blocks"):
            layers = getattr(owner, name, None)
            if isinstance(layers, nn.ModuleList):
                return layers
    raise ModelError("could not find the decoder layers of this model", hint="use --method lora for this architecture")


def sites(model: nn.Module, placement: str) -> list[nn.Module]:
    """The sub-blocks that get an adapter, in a fixed order."""
    out = []
    for i, layer in enumerate(decoder_layers(model)):
        if placement in ("attention", "both"):
            out.append(_find(layer, _ATTENTION_NAMES, "attention", i))
        if placement in ("mlp", "both"):
            out.append(_find(layer, _MLP_NAMES, "MLP", i))
    return out


def inject(model: nn.Module, config: dict[str, Any]) -> list[nn.Parameter]:
    """Add adapters described by ``config`` (bottleneck_size, placement, activation) to ``model``; returns their parameters."""
    hidden = int(model.config.hidden_size)
    ref = model.get_input_embeddings().weight
    params: list[nn.Parameter] = []
    for site in sites(model, config["placement"]):
        if hasattr(site, ATTR):
            raise ModelError("the model already has bottleneck adapters", hint="load a fresh base before adding adapters")
        adapter = BottleneckAdapter(hidden, int(config["bottleneck_size"]), config.get("activation", "relu"))
        adapter.to(device=ref.device, dtype=ref.dtype if ref.dtype.is_floating_point else torch.float32)
        site.add_module(ATTR, adapter)
        site.register_forward_hook(_hook)
        params.extend(adapter.parameters())
    return params


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, keyed by their position in the model."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if f".{ATTR}." in k}


def save(model: nn.Module, folder: Path, config: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = adapter_state(model)
    if not state:
        raise ModelError("this model has no bottleneck adapters to save")
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    described = dict(config, hidden_size=int(model.config.hidden_size), n_adapters=len(state) // 4,
                     parameters=sum(t.numel() for t in state.values()))
    (folder / CONFIG_FILE).write_text(json.dumps(described, indent=2) + "\n")


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing", hint="is this the weights folder of a bottleneck-adapter run?")
    return json.loads(path.read_text())


def load_state(model: nn.Module, folder: Path) -> None:
    """Copy saved adapter weights into a model that already has matching adapters."""
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing", hint="the folder is incomplete; resume from an earlier checkpoint")
    saved = load_file(str(path))
    mine = adapter_state(model)
    if set(saved) != set(mine):
        extra, missing = sorted(set(saved) - set(mine)), sorted(set(mine) - set(saved))
        raise CheckpointError(f"{path}: adapter weights do not match the model (unexpected {extra[:2]}, missing {missing[:2]})",
                              hint="the adapters were trained with another placement, size or base model")
    for k, v in saved.items():
        if v.shape != mine[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(mine[k].shape)}",
                                  hint="the adapters were trained with another bottleneck_size or base model")
    model.load_state_dict(saved, strict=False)
