"""Load what a run folder describes: its base model with the trained weights attached.

Everything needed is read from ``manifest.json``; nothing is asked again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tailored.config.manifest import read_manifest
from tailored.errors import CheckpointError
from tailored.methods.base import get_method, parse_options
from tailored.models.load import load_model, load_tokenizer, local_folder


def read_run(run_dir: str | Path) -> dict[str, Any]:
    return read_manifest(run_dir)


def weights_folder(run_dir: Path, which: str = "final") -> Path:
    """``adapter`` (final), ``best``, or a checkpoint name (``step-000050``)."""
    if which == "final":
        path = run_dir / "adapter"
    elif which == "best":
        path = run_dir / "best"
    else:
        path = run_dir / "checkpoints" / which / "weights"
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist", hint="did the run finish? `tailored train --resume` continues it")
    return path


def base_folder(manifest: dict[str, Any]) -> Path:
    """The base model's local folder, re-created from the recorded spec if the cache was cleared."""
    path = Path(manifest["base_model"]["path"])
    return path if (path / "config.json").is_file() else local_folder(manifest["base_model"]["spec"])


def load_run(run_dir: str | Path, *, which: str = "final", dtype: torch.dtype | None = None, device: str = "cpu",
             for_merge: bool = False) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(model, tokenizer, manifest) for a run folder, ready for generation.

    ``for_merge`` loads the base unquantized even when training used a quantized base, so merges are
    never done into quantized weights.
    """
    run_dir = Path(run_dir)
    manifest = read_run(run_dir)
    method = get_method(manifest["method"]["name"])
    options = parse_options(method, manifest["method"]["options"])
    load_kwargs = {} if for_merge else method.base_load_kwargs(options, device)
    base = load_model(base_folder(manifest), dtype=dtype, device=device, **load_kwargs)
    model = method.load(base, weights_folder(run_dir, which), trainable=False)
    model.eval()
    tok_dir = run_dir / "tokenizer"
    tokenizer = load_tokenizer(tok_dir if tok_dir.is_dir() else base_folder(manifest))
    if manifest.get("chat_template"):
        tokenizer.chat_template = manifest["chat_template"]  # the training template, always
    return model, tokenizer, manifest
