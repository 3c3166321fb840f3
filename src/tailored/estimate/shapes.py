"""``--model`` for estimates: a size name (``7b``), a preset (``llama-3.1-8b``), a model folder or a local model.

The shapes themselves live in :mod:`tailored.models.shapes` (the methods size themselves on them).
"""

from __future__ import annotations

import json
from pathlib import Path

from tailored.errors import ConfigError
from tailored.models.shapes import ALIASES, PRESETS, ModelShape, shape_from_config


def resolve_shape(spec: str | Path) -> tuple[ModelShape, Path | None]:
    """The shape for ``--model``: a preset/size name, a folder with config.json, or a local model alias.

    Returns the shape and the local folder (None for presets), whose tokenizer can count tokens.
    """
    text = str(spec)
    key = ALIASES.get(text.lower(), text.lower())
    if key in PRESETS:
        return PRESETS[key], None
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return shape_from_config(json.loads((path / "config.json").read_text()), path.name), path
    from tailored.models.load import local_folder
    from tailored.models.registry import resolve_model

    try:
        source = resolve_model(text)
    except Exception as exc:
        raise ConfigError(f"--model {text}: not a size, a preset or a local model",
                          hint=f"sizes: {', '.join(ALIASES)}; presets: {', '.join(PRESETS)}; or a folder with config.json") from exc
    if source.kind == "hub":
        raise ConfigError(f"--model {text}: estimates work offline; a hub id has no local config.json",
                          hint=f"pass its size instead ({', '.join(ALIASES)}) or a downloaded folder")
    folder = local_folder(source)
    return shape_from_config(json.loads((folder / "config.json").read_text()), source.name), folder
