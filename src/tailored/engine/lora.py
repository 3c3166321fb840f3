"""LoRA adapters as plain tensors beside ONE plain base model, applied per row during a batch.

Serving does not wrap the base in peft: a peft ``LoraLayer`` adds bookkeeping to every linear layer
at every step (even with adapters disabled), and its mixed-batch path (``adapter_names=``) re-derives
row indices in every layer at every step -- on a small model on CPU that costs more than the LoRA
maths. Instead, for the adapters in a batch, each targeted layer's ``A`` matrices are concatenated
(``R = Σ r`` rows) and so are its ``B·scaling`` matrices, once per batch; a 0/1 row mask keeps each
row's own columns (the targeted layers' ``forward`` is replaced for the batch, then restored):

    y = W·x + ((x·A_catᵀ) ⊙ mask_row) · B_catᵀ

Rows using the base get an all-zero mask; a batch of one adapter needs no mask; a batch of base rows
runs the untouched model. The result equals peft's ``W·x + s·B·(A·x)`` up to float rounding order
(tested against peft). Only plain LoRA on ``nn.Linear`` is handled here (:func:`plain_lora_problem`);
other variants are served as standalone models.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tailored.errors import CheckpointError

BASE = "__base__"
# adapter_config.json keys that change what LoRA computes; any of them set -> not "plain" LoRA
_VARIANTS = ("use_dora", "lora_bias", "fan_in_fan_out", "modules_to_save", "trainable_token_indices",
             "alora_invocation_tokens", "layer_replication", "target_parameters", "use_bdlora", "use_qalora",
             "arrow_config", "kasa_config", "velora_config", "monteclora_config")


def plain_lora_problem(cfg: dict[str, Any]) -> str | None:
    """Why an ``adapter_config.json`` is not plain LoRA (None when it is)."""
    if cfg.get("peft_type") != "LORA":
        return f"peft_type is {cfg.get('peft_type')!r}"
    used = [k for k in _VARIANTS if cfg.get(k)]
    return f"uses {', '.join(used)}" if used else None


def _alpha(cfg: dict[str, Any], module: str) -> float:
    for pattern, alpha in (cfg.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return float(alpha)
    return float(cfg["lora_alpha"])


def read_adapter(folder: Path, modules: dict[str, torch.nn.Module]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module name: (A [r, in], B·scaling [out, r])}`` from a peft LoRA folder (safetensors only)."""
    from safetensors.torch import load_file

    from tailored.methods.peft_common import require_safetensors

    try:
        cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}/adapter_config.json cannot be read ({type(exc).__name__})") from None
    problem = plain_lora_problem(cfg)
    if problem:
        raise CheckpointError(f"{folder}: not a plain LoRA adapter ({problem})")
    weights = load_file(str(require_safetensors(folder)))
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in weights.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")].removeprefix("base_model.model.")
        layer = modules.get(name)
        if not isinstance(layer, torch.nn.Linear):
            raise CheckpointError(f"{folder}: {name} is not a linear layer of the base model",
                                  hint="was this adapter trained on another base?")
        b = weights.get(key.replace(".lora_A.", ".lora_B."))
        if b is None or a.dim() != 2 or b.dim() != 2 or a.shape[1] != layer.in_features \
                or b.shape[0] != layer.out_features or b.shape[1] != a.shape[0]:
            raise CheckpointError(f"{folder}: the LoRA matrices of {name} do not fit the layer "
                                  f"({layer.in_features} in, {layer.out_features} out)",
                                  hint="was this adapter trained on another base?")
        r = a.shape[0]
        scale = _alpha(cfg, name) / (math.sqrt(r) if cfg.get("use_rslora") else r)
        dtype, device = layer.weight.dtype, layer.weight.device
        out[name] = (a.to(device, dtype), (b.float() * scale).to(device, dtype))
    if not out:
        raise CheckpointError(f"{folder}: no LoRA weights found")
    return out


class LoraBank:
    """The adapters held in memory for one base model.

    Args:
        model: the plain base model (never modified).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.adapters: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.versions: dict[str, int] = {}  # bumped on every load: prefix-cache entries of old weights never match
        self._layers: dict[tuple[str, ...], dict[str, tuple[torch.Tensor, torch.Tensor, tuple[tuple[str, int], ...]]]] = {}
        self._loads = 0

    def load(self, name: str, folder: Path) -> None:
        self.adapters[name] = read_adapter(Path(folder), self.modules)
        self._loads += 1
        self.versions[name] = self._loads
        self._layers.clear()

    def unload(self, name: str) -> None:
        self.adapters.pop(name, None)
        self._layers.clear()

    def layers(self, names: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor, tuple[tuple[str, int], ...]]]:
        """Per targeted layer: the concatenated ``A``, ``B·scaling`` of ``names`` and their ranks (built once per set)."""
        if names not in self._layers:
            missing = [n for n in names if n not in self.adapters]
            if missing:
                raise CheckpointError(f"adapters {missing} are not loaded")
            built = {}
            for module in {m for n in names for m in self.adapters[n]}:
                present = [n for n in names if module in self.adapters[n]]
                a_cat = torch.cat([self.adapters[n][module][0] for n in present], dim=0)  # [R, in]
                b_cat = torch.cat([self.adapters[n][module][1] for n in present], dim=1)  # [out, R]
                built[module] = (a_cat, b_cat, tuple((n, self.adapters[n][module][0].shape[0]) for n in present))
            self._layers[names] = built
        return self._layers[names]

    @contextmanager
    def rows(self, adapters: list[str], lengths: list[int] | None = None) -> Iterator[RowAdapters]:
        """Within: the model adds each row's own LoRA update (``__base__`` rows get none); ``lengths``: the
        rows are packed one after the other in one sequence, ``lengths[i]`` tokens each."""
        batch = RowAdapters(self, adapters, lengths)
        patched = []
        try:
            for name, forward in batch.forwards():
                # an instance-level forward (not a hook) keeps nn.Module's fast call path
                self.modules[name].forward = forward
                patched.append(name)
            yield batch
        finally:
            for name in patched:
                del self.modules[name].forward


class RowAdapters:
    """The concatenated LoRA matrices of one batch, and the row masks (rows leave as they finish)."""

    def __init__(self, bank: LoraBank, adapters: list[str], lengths: list[int] | None = None) -> None:
        self.bank = bank
        self.layers = bank.layers(tuple(sorted({a for a in adapters if a != BASE})))
        self._masks: dict[tuple[tuple[str, int], ...], torch.Tensor | None] = {}
        self.set_rows(adapters, lengths)

    def set_rows(self, adapters: list[str], lengths: list[int] | None = None) -> None:
        """The adapter of each row of the next forward pass (``lengths``: rows packed in one sequence)."""
        self.rows, self.lengths = list(adapters), lengths
        self._masks.clear()

    def _mask(self, layout: tuple[tuple[str, int], ...], like: torch.Tensor) -> torch.Tensor | None:
        """[B, 1, R] (packed: [1, T, R]) 0/1 columns of each row's adapter; None when every row uses the layer's
        only adapter."""
        if layout in self._masks:
            return self._masks[layout]
        mask = None
        if not (len(layout) == 1 and all(a == layout[0][0] for a in self.rows)):
            columns = [torch.tensor([[1.0 if a == name else 0.0] for a in self.rows]).expand(-1, r) for name, r in layout]
            mask = torch.cat(columns, dim=1)
            mask = (mask.repeat_interleave(torch.tensor(self.lengths), dim=0)[None] if self.lengths
                    else mask[:, None, :]).to(like)
        self._masks[layout] = mask
        return mask

    def forwards(self) -> Iterator[tuple[str, Any]]:
        """(module name, replacement forward computing ``W·x + b + LoRA rows``) for every targeted layer."""
        for module, (a, b, layout) in self.layers.items():
            layer = self.bank.modules[module]

            def forward(x: torch.Tensor, weight: torch.Tensor = layer.weight, bias: Any = layer.bias,
                        a: torch.Tensor = a, b: torch.Tensor = b, layout: tuple = layout) -> torch.Tensor:
                low = F.linear(x, a)
                mask = self._mask(layout, low)
                return F.linear(x, weight, bias).add_(F.linear(low if mask is None else low * mask, b))

            yield module, forward
