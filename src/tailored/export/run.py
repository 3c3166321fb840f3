"""``export_run``: the one entry point behind ``tailored export`` (the manifest is the only input)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from tailored.config.files import atomic_write, file_sha256, write_json
from tailored.config.manifest import Manifest, RunFolder, versions
from tailored.data.stops import end_of_turn_id, stop_token_ids
from tailored.export.common import EXPORT_RECORD, ExportResult, export_folder, list_files, resolve_dtype


def _record(run: RunFolder, manifest: Manifest, result: ExportResult, which: str, stop_ids: list[int]) -> dict[str, Any]:
    run_dir = run.path
    weights = run.weights(which)
    return {
        "tailored_export": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "format": result.format,
        "dtype": result.dtype,
        "run": {"path": str(run_dir.resolve()), "name": run_dir.name, "weights": which,
                "manifest_sha256": file_sha256(run.manifest_file),
                "weights_sha256": {p.name: file_sha256(p) for p in sorted(weights.glob("*.safetensors"))}},
        "base_model": manifest.base_model.model_dump(),
        "method": manifest.method.model_dump(),
        "stop_token_ids": stop_ids,
        "files": {name: {"bytes": size, "sha256": file_sha256(result.out_dir / name)} for name, size in result.files.items()},
        "warnings": result.warnings,
        "notes": result.notes,
        "seconds": round(result.seconds, 2),
        "versions": versions(),
    }


def export_run(run_dir: str | Path, out_dir: str | Path, *, format: str = "merged", dtype: str | None = None,
               which: str = "auto", force: bool = False) -> ExportResult:
    """Export a run folder as a merged HF model, a checked adapter, or a GGUF file.

    Everything (base model, method, chat template, stop tokens) comes from the run's manifest.
    The output appears atomically: it is written next to ``out_dir`` and renamed into place.

    Args:
        run_dir: a folder written by ``tailored train``.
        out_dir: the folder to create.
        format: ``merged`` (HF folder, default), ``adapter`` (peft adapter alone) or ``gguf``.
        dtype: merged: f32 (auto), bf16, f16; gguf: f16 (auto), q8_0, f32; adapter: as trained.
        which: weights to export: ``auto`` (the best validation step's when the run kept them, else the final
            ones), ``final``, ``best`` or a checkpoint name; the one exported is in the result and the record.
        force: replace an existing non-empty ``out_dir``.

    Returns:
        ExportResult with the files written, warnings and notes.

    Raises:
        ExportError: the method cannot be exported in this format, or ``out_dir`` is in the way.
        CheckpointError: ``run_dir`` is not a (finished) run folder.
    """
    from tailored.export.card import model_card, red_flags

    start = time.time()
    run, out_dir = RunFolder(run_dir), Path(out_dir)
    run_dir = run.path
    manifest = run.read()
    dtype = resolve_dtype(format, dtype)
    described, which = run.describe_weights(which), run.pick(which)
    run.weights(which)  # fail early if the weights are missing
    if format != "adapter":
        from tailored.export.merge import require_mergeable

        require_mergeable(manifest, format)
    result = ExportResult(out_dir=out_dir, format=format, dtype=dtype, weights=described)
    with export_folder(out_dir, force=force) as tmp:
        if format == "adapter":
            tokenizer, stop_ids = _write_adapter(run_dir, tmp, manifest, which, result)
        else:
            tokenizer, stop_ids = _write_merged(run_dir, tmp, manifest, which, result)
        if manifest.neighbours is not None:  # the weights expect the listing in every prompt: it travels with them
            shutil.copytree(run.neighbours, tmp / "neighbours")
            result.warnings.append(
                f"the run was trained with its {manifest.neighbours.k} most similar labelled training requests listed in "
                "each prompt's system message (neighbours/, see tailored.models.neighbours); `tailored serve` on the run "
                "folder adds the listing, another server must add the same or answers will be worse than the run's evaluation")
        verdict, flags = red_flags(run_dir, manifest)
        if verdict in ("warning", "red"):
            result.warnings.append(f"the run's red flags say {verdict.upper()}: "
                                   + "; ".join(f.replace("**", "") for f in flags if not f.startswith("**ok")
                                               and not f.startswith("**skipped")))
        stop_tokens = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids]
        atomic_write(tmp / "README.md", model_card(
            run_dir, manifest, fmt=format, dtype=result.dtype, out_name=str(out_dir), stop_tokens=stop_tokens,
            notes=result.notes, warnings=result.warnings,
            main_file=result.main_file.name if result.main_file else None))
        result.out_dir = tmp  # hashes are computed on the temporary folder, before the rename
        result.files = list_files(tmp)
        result.seconds = time.time() - start
        write_json(tmp / EXPORT_RECORD, _record(run, manifest, result, which, stop_ids))
        result.files = list_files(tmp)
        result.out_dir = out_dir
    result.seconds = time.time() - start
    return result


def _stop_ids(tokenizer: Any, manifest: Manifest) -> list[int]:
    return stop_token_ids(tokenizer, manifest.chat_template, manifest.eos_token_ids)


def _write_adapter(run_dir: Path, tmp: Path, manifest: Manifest, which: str, result: ExportResult) -> tuple[Any, list[int]]:
    from tailored.export.adapter import write_adapter
    from tailored.models.load import load_tokenizer

    result.warnings, result.notes = write_adapter(run_dir, tmp, which=which)
    tokenizer = load_tokenizer(tmp)
    return tokenizer, _stop_ids(tokenizer, manifest)


def _write_merged(run_dir: Path, tmp: Path, manifest: Manifest, which: str, result: ExportResult) -> tuple[Any, list[int]]:
    """Merge, then write a HF folder (format merged) or a GGUF file + Ollama Modelfile (format gguf)."""
    from tailored.export.hf import TORCH_DTYPES, base_dtype, write_merged
    from tailored.export.merge import merge_run

    stored = base_dtype(manifest)
    if result.dtype == "auto":
        result.dtype = stored if result.format == "merged" else "f16"
    dtype = result.dtype
    # A base stored in the target dtype is loaded in it (half the memory, still exact: see merge_run);
    # anything else is merged in fp32 and rounded once when saved.
    load_dtype = TORCH_DTYPES[dtype] if result.format == "merged" and dtype == stored else torch.float32
    merged = merge_run(run_dir, which=which, fmt=result.format, dtype=load_dtype)
    result.notes += merged.notes
    tokenizer = merged.tokenizer
    stop_ids = _stop_ids(tokenizer, manifest)
    if result.format == "merged":
        write_merged(merged, tmp, dtype=dtype, stop_ids=stop_ids)
        return tokenizer, stop_ids
    from tailored.export.gguf import write_gguf

    name = f"model-{dtype}.gguf"
    eot = end_of_turn_id(tokenizer, manifest.chat_template)
    warnings, notes = write_gguf(merged, tmp / name, dtype=dtype, stop_ids=stop_ids, eot_id=eot, run_name=run_dir.name)
    result.warnings += warnings
    result.notes += notes
    result.main_file = result.out_dir / name  # self-contained: tokenizer, template and stop token inside
    # Ollama reads the template from the GGUF; the explicit stops guard older versions that do not.
    stops = "".join(f"PARAMETER stop {json.dumps(tokenizer.convert_ids_to_tokens(i))}\n" for i in stop_ids)
    atomic_write(tmp / "Modelfile", f"FROM ./{name}\n{stops}")
    return tokenizer, stop_ids
