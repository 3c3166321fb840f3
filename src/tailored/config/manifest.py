"""Reading a run folder's ``manifest.json`` (written by :mod:`tailored.train.manifest`).

It lives in the config layer because every later layer (methods, eval, export, serve) reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailored.errors import CheckpointError

MANIFEST = "manifest.json"


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no {MANIFEST})", hint="pass the folder `tailored train` printed")
    return json.loads(path.read_text())


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()
