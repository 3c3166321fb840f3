"""Cache of evaluation results per (model weights, data, settings) under ``$TAILORED_HOME/eval-cache/``.

The key hashes what determines the answers: the base model's content hash, the trained weights'
bytes (for a run folder), the data file's bytes and the generation settings. Repeating an
evaluation (or the base model's half of a base-vs-tuned comparison) is then instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from tailored.models.registry import tailored_home


def cache_dir() -> Path:
    return tailored_home() / "eval-cache"


def _hash_folder(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".bin")):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def model_identity(target: str | Path | None, which: str = "final") -> str:
    """A stable hash of the weights ``target`` loads (a run folder's base + trained weights, or a base model)."""
    from tailored.models.load import content_hash, local_folder
    from tailored.train.manifest import is_run_dir, read_manifest

    if target is not None and is_run_dir(target):
        from tailored.methods.runs import weights_folder

        manifest = read_manifest(target)
        weights = weights_folder(Path(target), which)
        return hashlib.sha256(f"run:{manifest['base_model'].get('content_hash')}:{_hash_folder(weights)}:"
                              f"{manifest.get('chat_template')}".encode()).hexdigest()
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"value": value}))
        os.replace(tmp, path)
    return value, False
