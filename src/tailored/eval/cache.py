"""Cache of evaluation results per (model weights, data, settings) under ``$TAILORED_HOME/eval-cache/``.

The key hashes what determines the answers: the base model's content hash, the trained weights'
bytes (for a run folder), the data file's bytes and the generation settings. Repeating an
evaluation (or the base model's half of a base-vs-tuned comparison) is then instant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from tailored.config.files import folder_sha256, write_json
from tailored.config.manifest import RunFolder
from tailored.models.registry import tailored_home


def cache_dir() -> Path:
    return tailored_home() / "eval-cache"


def model_identity(target: str | Path | None, which: str = "auto") -> str:
    """A stable hash of the weights ``target`` loads (a run folder's base + trained weights, or a base model)."""
    from tailored.models.load import content_hash, local_folder

    run = RunFolder(target) if target is not None else None
    if run is not None and run.exists():
        manifest = run.read()
        weights = folder_sha256(run.weights(which), suffixes=(".safetensors", ".json"))
        return hashlib.sha256(f"run:{manifest.base_model.content_hash}:{weights}:{manifest.chat_template}".encode()).hexdigest()
    folder = local_folder(None if target is None else str(target))
    return hashlib.sha256(f"model:{content_hash(folder)}".encode()).hexdigest()


CACHE_VERSION = 1  # bump when scoring or generation code changes what a cached entry means


def key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached(cache_key: str, compute: Callable[[], Any], *, enabled: bool = True) -> tuple[Any, bool]:
    """(value, was_cached): read ``cache_key`` or compute, store (atomically) and return it."""
    path = cache_dir() / f"{cache_key}.json"
    if enabled and path.is_file():
        try:
            return json.loads(path.read_text())["value"], True
        except (json.JSONDecodeError, KeyError):
            pass  # a damaged entry is recomputed
    value = compute()
    if enabled:
        write_json(path, {"value": value}, indent=None)
    return value, False
