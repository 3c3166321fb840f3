"""Load what a run folder describes: its base model, its tokenizer as trained, the trained weights attached.

Everything needed is read from the manifest (:class:`~tailored.config.manifest.RunFolder`); nothing is
asked again. Every layer that needs a run's tokenizer calls :func:`run_tokenizer`, so the chat
template of training is the one used everywhere after it; :func:`run_neighbours` likewise gives the
labelled-neighbours listing its prompts had in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tailored.config.manifest import Manifest, RunFolder
from tailored.methods.base import Method, get_method, parse_options
from tailored.models.load import load_model, load_tokenizer, local_folder
from tailored.models.neighbours import Neighbours


def base_folder(manifest: Manifest) -> Path:
    """The base model's local folder, re-created from the recorded spec if the cache was cleared."""
    path = Path(manifest.base_model.path)
    return path if (path / "config.json").is_file() else local_folder(manifest.base_model.spec)


def run_method(manifest: Manifest) -> tuple[Method, Any]:
    """The run's method and its validated options."""
    method = get_method(manifest.method.name)
    return method, parse_options(method, manifest.method.options)


def run_tokenizer(run: RunFolder, manifest: Manifest | None = None) -> Any:
    """The run's tokenizer with the chat template it was trained with (always that one)."""
    manifest = manifest or run.read()
    tokenizer = load_tokenizer(run.tokenizer if run.tokenizer.is_dir() else base_folder(manifest))
    if manifest.chat_template:
        tokenizer.chat_template = manifest.chat_template
    return tokenizer


def run_neighbours(run: RunFolder, manifest: Manifest | None = None) -> Neighbours | None:
    """The run's labelled-neighbours index (None when its prompts had none in training)."""
    manifest = manifest or run.read()
    return Neighbours.load(run.neighbours, manifest.neighbours) if manifest.neighbours is not None else None


def load_run(run_dir: str | Path, *, which: str = "auto", dtype: torch.dtype | None = None, device: str = "cpu",
             for_merge: bool = False, merged: bool = False) -> tuple[torch.nn.Module, Any, Manifest]:
    """(model, tokenizer, manifest) for a run folder, ready for generation.

    ``for_merge`` loads the base unquantized even when training used a quantized base, so merges are
    never done into quantized weights.

    ``merged`` (chat, eval, standalone serving) folds the weights into the base in memory when the
    method can (:attr:`~tailored.methods.base.Method.mergeable`) and trained on a full-precision base:
    the answers are the same and every step costs what the base costs (an unmerged DoRA recomputes
    each weight's norm at every forward pass). Methods that cannot merge, or that chose a quantized
    base to save memory, stay unmerged. ``which``: ``auto`` (the best validation step's weights when the
    run kept them, else the final ones), ``final``, ``best`` or a checkpoint name.
    """
    run = RunFolder(run_dir)
    manifest = run.read()
    method, options = run_method(manifest)
    load_kwargs = {} if for_merge else method.base_load_kwargs(options, device)
    base = load_model(base_folder(manifest), dtype=dtype, device=device, **load_kwargs)
    model = method.load(base, run.weights(which), trainable=False)
    if merged and not for_merge and method.mergeable and not method.quantization(options):
        model = method.merge(model)
    model.eval()
    return model, run_tokenizer(run, manifest), manifest
