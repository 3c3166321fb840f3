"""Shared plumbing for methods implemented with ``peft`` (LoRA, DoRA, IA3, prefix/prompt tuning, ...).

A peft-backed method only says how to build its ``peft`` config; saving, loading, resuming and merging
are the same for all of them and live here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from tailored.errors import CheckpointError
from tailored.methods.base import MethodBase, refuse_merge

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def require_safetensors(folder: Path) -> Path:
    """``folder``'s ``adapter_model.safetensors``; a folder holding only pickled weights is refused by name.

    peft falls back to ``torch.load`` of ``adapter_model.bin`` when the safetensors file is missing, and
    a pickle can run code when loaded: Tailored never hands such a folder to peft.
    """
    path = folder / ADAPTER_WEIGHTS
    if path.is_file():
        return path
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    if pickles:
        raise CheckpointError(f"{folder} holds {', '.join(pickles)} but no {ADAPTER_WEIGHTS}: Tailored loads adapters "
                              "from safetensors only (a pickled .bin can run code when loaded)",
                              hint="convert it where you trust it: PeftModel.from_pretrained(...).save_pretrained(DIR, "
                                   "safe_serialization=True)")
    raise CheckpointError(f"{path} is missing", hint="the adapter folder is incomplete; train or export it again")


class PeftMethod(MethodBase):
    """The contract for peft-backed methods: a peft adapter folder, merged with ``merge_and_unload``."""

    weights_format = "peft"

    def peft_config(self, options: BaseModel) -> Any:  # pragma: no cover - each method overrides
        raise NotImplementedError

    def prepare(self, model: torch.nn.Module, options: BaseModel) -> torch.nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(options))

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        model.save_pretrained(str(folder), safe_serialization=True)

    def load(self, base: torch.nn.Module, folder: Path, *, trainable: bool = False) -> torch.nn.Module:
        from peft import PeftModel

        if not (Path(folder) / "adapter_config.json").is_file():
            raise CheckpointError(f"{folder} has no adapter_config.json", hint="is this a run folder of a peft method?")
        require_safetensors(Path(folder))
        return PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)

    def load_state(self, model: torch.nn.Module, folder: Path) -> None:
        # Loading weights into the freshly prepared model works for every peft method, including the
        # prompt-learning ones that peft refuses to reload as trainable.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = require_safetensors(Path(folder))
        result = set_peft_model_state_dict(model, load_file(str(path)))
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise CheckpointError(f"{path}: unexpected weights {unexpected[:3]}", hint="the checkpoint belongs to another method or config")

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.merge_refusal:
            raise refuse_merge(self.name, self.merge_refusal)  # type: ignore[attr-defined]
        return model.merge_and_unload()
