"""Merge a run's trained weights into its base, reading everything from the manifest.

Merges always go into full-precision base weights: a LoRA trained on a 4-bit base (QLoRA) is
merged into an unquantized copy (``load_run(..., for_merge=True)``), because folding it into
quantized weights re-quantizes them and damages the model. The notes say when that happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tailored.config.manifest import Manifest, RunFolder
from tailored.export.common import ExportError
from tailored.methods.runs import load_run, run_method


@dataclass
class MergedRun:
    """A plain transformers model with the run's weights folded in, and what was done to get it."""

    model: torch.nn.Module
    tokenizer: Any
    manifest: Manifest
    notes: list[str] = field(default_factory=list)


def require_mergeable(manifest: Manifest, fmt: str) -> None:
    """Raise a clear error for methods whose weights are not a change of the base weights."""
    method, _ = run_method(manifest)
    if not method.mergeable:
        raise ExportError(
            f"--format {fmt}: the run was trained with method {method.name!r}, which cannot be merged into the "
            f"base weights: {method.merge_refusal}",
            hint="export it with --format adapter and serve it on top of the base (`tailored serve` loads it)",
        )


def merge_run(run_dir: str | Path, *, which: str = "final", fmt: str = "merged",
              dtype: torch.dtype = torch.float32) -> MergedRun:
    """Load ``run_dir`` (base + weights named by ``which``) and fold the weights into the base.

    Args:
        run_dir: a run folder written by ``tailored train``.
        which: ``final``, ``best`` or a checkpoint name (``step-000050``).
        fmt: the export format asking (only used in error messages).
        dtype: the base is loaded in this dtype. Pass a 16-bit dtype only for a base stored in it: a
            7B model then needs ~14 GB of memory rather than ~28 GB, and the result is still
            bit-identical to merging in fp32 and rounding once (the adapter stays fp32 and peft adds
            its delta in place, which PyTorch computes in fp32; tested).

    Raises:
        ExportError: the method cannot be merged.
    """
    manifest = RunFolder(run_dir).read()
    require_mergeable(manifest, fmt)
    notes: list[str] = []
    method, options = run_method(manifest)
    quantized = method.quantization(options)
    if quantized:
        notes.append(f"the run trained on a {quantized} base; its weights were merged into the unquantized base "
                     "(dequantized first), never into quantized weights. Answers can differ slightly from the "
                     "quantized model used in training.")
    if manifest.base_model.kind in ("embedded", "gguf"):
        notes.append("the base model came from a GGUF file and was dequantized to fp32 before training; the merge "
                     "uses those same fp32 weights.")
    model, tokenizer, manifest = load_run(run_dir, which=which, dtype=dtype, for_merge=True)
    merged = method.merge(model)
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    if hasattr(merged, "peft_config"):  # still wrapped: the method did not really merge
        raise ExportError(f"method {method.name} returned a wrapped model from merge()", hint="report this as a bug")
    return MergedRun(merged, tokenizer, manifest, notes)

