"""Writing files so that nothing is ever half-written, and hashing them: one implementation of each.

Every file or folder Tailored writes (manifests, checkpoints, cleaned data, converted models,
exports, cache entries) goes through :func:`atomic_write`, :func:`atomic_open`, :func:`write_json` or
:func:`atomic_folder`: the content is written beside its target under a hidden temporary name and
renamed into place, so a killed process leaves the old content or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, creating its folder."""
    with atomic_open(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to stream ``path``'s new content into; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON atomically (values JSON does not know are written as strings)."""
    atomic_write(path, json.dumps(data, indent=indent, default=str, ensure_ascii=False))


@contextmanager
def atomic_folder(target: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block succeeds it becomes ``target``.

    An existing ``target`` is replaced (renamed away first, removed after the new one is in place),
    or, with ``keep_existing``, kept and the new folder discarded (another process got there first).
    When the block fails, ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if target.exists() and keep_existing:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks (data files, GGUF files, weights); of a folder (a datasets folder): its files."""
    if Path(path).is_dir():
        return folder_sha256(path, suffixes=("",))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_sha256(folder: str | Path, suffixes: tuple[str, ...] = (".safetensors",)) -> str:
    """sha256 over the files of ``folder`` (recursively) whose names end in ``suffixes``: paths and contents."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(suffixes)):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
