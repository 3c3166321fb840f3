"""Mixed-adapter batches in one pass per layer: every row gets its own LoRA update (or none).

peft's ``adapter_names=`` runs each adapter on its sub-batch, re-deriving the row indices in every
layer at every step, which costs more than the LoRA maths itself on a small model. Here, for the
adapters in a batch, each LoRA layer's ``A`` matrices are concatenated (``R = Σ r`` rows) and its
``B·scaling`` matrices likewise, once per batch; a 0/1 row mask keeps each row's own columns:

    y = W·x + ((x·A_catᵀ) ⊙ mask_row) · B_catᵀ

Rows using the base have an all-zero mask. That is two small matmuls and a multiply per layer
whatever the number of adapters. The result equals each adapter's own ``W·x + s·B·(A·x)`` up to
float rounding order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from tailored.serve.registry import BASE_ADAPTER


def lora_layers(model: torch.nn.Module) -> list[Any]:
    """The peft LoRA ``Linear`` layers of ``model``."""
    from peft.tuners.lora.layer import Linear

    return [m for m in model.modules() if isinstance(m, Linear)]


class MixedLora:
    """Hooks that add per-row LoRA updates while peft's own adapters are disabled.

    Args:
        model: the ``PeftModel`` holding the adapters.
        adapters: the adapter (or ``__base__``) of each row, in batch order.
    """

    def __init__(self, model: Any, adapters: list[str]) -> None:
        self.model = model
        self.names = sorted({a for a in adapters if a != BASE_ADAPTER})
        self.layers: list[tuple[Any, torch.Tensor, torch.Tensor, tuple[tuple[str, int], ...]]] = []
        for layer in lora_layers(model):
            present = [n for n in self.names if n in layer.lora_A]
            if not present:
                continue
            a_cat = torch.cat([layer.lora_A[n].weight for n in present], dim=0)  # [R, in]
            b_cat = torch.cat([layer.lora_B[n].weight * layer.scaling[n] for n in present], dim=1)  # [out, R]
            layout = tuple((n, layer.lora_A[n].weight.shape[0]) for n in present)
            self.layers.append((layer, a_cat, b_cat, layout))
        self._masks: dict[tuple[tuple[str, int], ...], torch.Tensor | None] = {}
        self.set_rows(adapters)

    def set_rows(self, adapters: list[str]) -> None:
        """The adapter of each row of the next forward pass (rows leave the batch as they finish)."""
        self.rows = list(adapters)
        self._masks.clear()

    def _mask(self, layout: tuple[tuple[str, int], ...], like: torch.Tensor) -> torch.Tensor | None:
        """[B, 1, R] 0/1 columns of each row's adapter; None when every row uses the layer's only adapter."""
        if layout in self._masks:
            return self._masks[layout]
        mask = None
        if not (len(layout) == 1 and all(a == layout[0][0] for a in self.rows)):
            columns = [torch.tensor([[1.0 if a == name else 0.0] for a in self.rows]).expand(-1, r) for name, r in layout]
            mask = torch.cat(columns, dim=1).to(like)[:, None, :]
        self._masks[layout] = mask
        return mask

    @contextmanager
    def active(self) -> Iterator[MixedLora]:
        """Within: the model computes base outputs plus each row's own LoRA update."""
        handles = []
        for layer, a_cat, b_cat, layout in self.layers:
            def hook(module: Any, args: tuple, output: torch.Tensor, a=a_cat, b=b_cat, lay=layout) -> torch.Tensor:
                x = args[0].to(a.dtype)
                mask = self._mask(lay, x)
                low = x @ a.T
                return output + (low if mask is None else low * mask) @ b.T

            handles.append(layer.register_forward_hook(hook))
        try:
            with self.model.disable_adapter():
                yield self
        finally:
            for h in handles:
                h.remove()
