"""``--format merged``: a plain Hugging Face model folder any transformers-based tool loads unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tailored.config.manifest import Manifest
from tailored.export.merge import MergedRun

TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def base_dtype(manifest: Manifest) -> str:
    """The dtype the base model was saved in (its config.json), as an export dtype name."""
    import json

    from tailored.methods.runs import base_folder

    config = json.loads((base_folder(manifest) / "config.json").read_text())
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
    return {"bfloat16": "bf16", "float16": "f16"}.get(name, "f32")


def generation_config(model: torch.nn.Module, tokenizer: Any, stop_ids: list[int]) -> Any:
    """The base's generation config with the run's stop tokens (eos) and pad token filled in."""
    from transformers import GenerationConfig

    gen = getattr(model, "generation_config", None)
    gen = GenerationConfig.from_dict(gen.to_dict()) if gen is not None else GenerationConfig.from_model_config(model.config)
    gen.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else list(stop_ids)
    if tokenizer.pad_token_id is not None:
        gen.pad_token_id = int(tokenizer.pad_token_id)
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = int(tokenizer.bos_token_id)
    return gen


def write_merged(merged: MergedRun, folder: Path, *, dtype: str, stop_ids: list[int]) -> None:
    """Save the merged model (safetensors), tokenizer (training chat template) and generation config.

    Args:
        merged: the merged run.
        folder: target folder (exists, empty).
        dtype: f32, bf16 or f16.
        stop_ids: token ids generation stops on.
    """
    model = merged.model.to(TORCH_DTYPES[dtype])
    model.config.dtype = TORCH_DTYPES[dtype]
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.config.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else list(stop_ids)
    model.generation_config = generation_config(model, merged.tokenizer, stop_ids)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer = merged.tokenizer
    tokenizer.chat_template = merged.manifest.chat_template or tokenizer.chat_template
    tokenizer.save_pretrained(str(folder))
