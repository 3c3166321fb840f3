"""``manifest.json``: what a run folder is, so export, eval and serve never ask again.

Records the base model (spec, local folder, content hash), the method and its options, the resolved
hyperparameters, the data files and their hashes, the chat template and stop tokens used in training,
package versions, and the final metrics.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tailored.errors import CheckpointError
from tailored.train.checkpoint import write_json

MANIFEST = "manifest.json"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("tailored", "torch", "transformers", "peft", "accelerate", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_manifest(run_dir: Path, data: dict[str, Any]) -> None:
    data = dict(data, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json(run_dir / MANIFEST, data)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no {MANIFEST})", hint="pass the folder `tailored train` printed")
    return json.loads(path.read_text())


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()
