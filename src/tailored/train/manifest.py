"""``manifest.json``: what a run folder is, so export, eval and serve never ask again.

Records the base model (spec, local folder, content hash), the method and its options, the resolved
hyperparameters, the data files and their hashes, the chat template and stop tokens used in training,
package versions, and the final metrics.
"""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tailored.config.manifest import MANIFEST, is_run_dir, read_manifest  # noqa: F401 - re-exported
from tailored.models.load import file_sha256  # noqa: F401 - re-exported
from tailored.train.checkpoint import write_json



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
