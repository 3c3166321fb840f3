"""What each registered method would train on a given model: counts, adapter size and memory, without weights.

The model is built from its config on the ``meta`` device (no weights are read or allocated), each
method's ``prepare`` runs on it with default options, and the parameters are counted. Memory is the
training footprint of weights + gradients + AdamW state; activations come on top and depend on the
batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tailored.methods.base import Method, count_parameters, get_method, method_names

FP32 = 4  # bytes per trained weight; AdamW keeps two more fp32 tensors and there is one gradient


@dataclass
class MethodInfo:
    name: str
    summary: str
    when: str
    mergeable: bool
    trainable: int
    total: int
    adapter_bytes: int  # what `save` writes (fp32)
    train_memory_bytes: int  # weights + gradients + AdamW state
    defaults: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_model(folder: str | Path) -> torch.nn.Module:
    """The model of ``folder`` with parameters on the meta device (shapes only)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=False)


def _quantized_bytes(model: torch.nn.Module, bits: int) -> int:
    """Base weights in bytes when the decoder's linear layers hold ``bits``-bit weights (the rest stays fp32)."""
    seen: set[int] = set()
    total = 0
    head = model.get_output_embeddings()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            quantized = isinstance(module, torch.nn.Linear) and module is not head and p.dim() == 2
            total += p.numel() * bits // 8 if quantized else p.numel() * FP32
    return total


def describe(method: Method, folder: str | Path) -> MethodInfo:
    """Counts for one method on the model in ``folder``."""
    options = method.Options()
    base = meta_model(folder)
    base_total = sum(p.numel() for p in base.parameters())
    bits = getattr(options, "quant_bits", None)
    base_bytes = _quantized_bytes(base, bits) if bits else base_total * FP32
    model = method.prepare(base, options)
    trainable, total = count_parameters(model)
    extra = total - base_total  # parameters the method added (adapters, virtual tokens)
    return MethodInfo(
        name=method.name, summary=method.summary, when=method.when, mergeable=method.mergeable,
        trainable=trainable, total=total, adapter_bytes=trainable * FP32,
        train_memory_bytes=base_bytes + extra * FP32 + trainable * 3 * FP32,
        defaults=options.model_dump(),
    )


def catalog(folder: str | Path) -> list[MethodInfo]:
    """Every registered method on the model in ``folder``."""
    return [describe(get_method(name), folder) for name in method_names()]
