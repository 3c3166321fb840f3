"""What each registered method would train on a given model: counts, adapter size and memory, without weights.

The model's shape comes from its ``config.json`` (nothing is loaded or allocated) and each method
states what it trains and adds on that shape with its default options (``Method.footprint``, which
``tests/test_methods_footprint.py`` holds to the counts of a really prepared model). Memory is the
training footprint of weights + gradients + AdamW state; activations come on top and depend on the
batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tailored.methods.base import Method, get_method, method_names
from tailored.models.shapes import ModelShape, shape_of_folder

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


def describe(method: Method, shape: ModelShape) -> MethodInfo:
    """Counts for one method, with its default options, on a model of this shape."""
    options = method.Options()
    fp = method.footprint(shape, options)
    bits = fp.quantized_linear_bits
    # A quantized base keeps its blocks' linear layers in ``bits`` per weight; embeddings and norms stay fp32.
    base_bytes = (shape.linear_params * bits / 8 + (shape.n_params - shape.linear_params) * FP32 if bits is not None
                  else shape.n_params * FP32)
    return MethodInfo(
        name=method.name, summary=method.summary, when=method.when, mergeable=method.mergeable,
        trainable=fp.trainable, total=shape.n_params + fp.added, adapter_bytes=fp.trainable * FP32,
        train_memory_bytes=int(base_bytes + fp.added * FP32 + fp.trainable * 3 * FP32),
        defaults=options.model_dump(),
    )


def catalog(folder: str | Path) -> list[MethodInfo]:
    """Every registered method on the model in ``folder`` (its config.json)."""
    shape = shape_of_folder(folder)
    return [describe(get_method(name), shape) for name in method_names()]
