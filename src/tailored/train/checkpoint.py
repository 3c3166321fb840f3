"""Atomic checkpoints.

A checkpoint folder holds the method's trainable weights (written by the method itself), the
optimizer and scheduler state, the RNG states and the data position. Tensors go to safetensors and
everything else to JSON: nothing is ever unpickled. Each checkpoint is written into a temporary
folder and renamed into place, so a killed process never leaves a half checkpoint behind; old ones
are renamed away before they are deleted, so a kill during the deletion never leaves one half there.

A write that fails because the disk is full or not writable raises :class:`DiskError`, a
:class:`~tailored.errors.CheckpointError` that names the path and the reason in one line.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from tailored.config.files import atomic_folder, write_json
from tailored.errors import CheckpointError

STATE_FILE = "trainer_state.json"
CHECKPOINT_FILES = (STATE_FILE, "optimizer.safetensors", "rng.safetensors")  # and the folder weights/

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def disk_problem(exc: BaseException) -> str | None:
    """Why a write failed, in words, when the disk is full or not writable; None for any other error.

    OSError carries an errno; safetensors' writer only says ``... (os error 28)`` in its message.
    """
    code = getattr(exc, "errno", None)
    if code is None:
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    if code in _FULL:
        what = "the disk is full" if code != errno.EFBIG else "the disk is full (or the file is over this system's size limit)"
        return f"{what}: {os.strerror(code)}"
    if code in _NOT_WRITABLE:
        return f"the disk or folder is not writable: {os.strerror(code)}"
    return None


class DiskError(CheckpointError):
    """Writing ``path`` failed because the disk is full or not writable (``problem`` says which)."""

    def __init__(self, path: Path, problem: str, *, then: str = "run the command again") -> None:
        remedy = "make it writable (or choose a writable --output)" if "not writable" in problem else "free some space on that disk"
        super().__init__(f"cannot write {path}: {problem}", hint=f"{remedy}, then {then}")
        self.path, self.problem, self.then = Path(path), problem, then


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full or read-only disk met while writing ``path`` into a :class:`DiskError` naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:
        problem = disk_problem(exc)
        if problem is None:
            raise
        raise DiskError(path, problem) from None


def _optimizer_tensors(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict as (safetensors tensors, JSON). Its state is keyed by parameter index, or by
    parameter name for a state gathered from FSDP shards."""
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[Any, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, key = name.rsplit(".", 1)
        state.setdefault(int(idx) if idx.isdigit() else idx, {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def write_optimizer(folder: Path, sd: dict[str, Any], *, name: str = "optimizer") -> None:
    """One optimizer state as ``name.safetensors`` + ``name.json`` in ``folder`` (a process's ZeRO partition)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = _optimizer_tensors(sd)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    write_json(folder / f"{name}.json", meta)


def read_optimizer(folder: Path, *, name: str = "optimizer") -> dict[str, Any]:
    if not (folder / f"{name}.safetensors").is_file():
        raise CheckpointError(f"{folder} has no {name}.safetensors",
                              hint="a ZeRO checkpoint resumes only with as many processes as it was saved with")
    return _optimizer_state(load_file(str(folder / f"{name}.safetensors")), json.loads((folder / f"{name}.json").read_text()))


def save_checkpoint(
    folder: Path,
    *,
    save_weights: Callable[[Path], None],
    optimizer_state: dict[str, Any],
    scheduler: Any,
    state: dict[str, Any],
    shards: Path | None = None,
) -> Path:
    """Write a complete checkpoint to ``folder`` atomically and return it (a full disk: :class:`DiskError`).

    ``shards``: a folder of files the other processes wrote (their optimizer partitions), moved in.
    """
    with writing(folder), atomic_folder(folder) as tmp:
        save_weights(tmp / "weights")
        tensors, meta = _optimizer_tensors(optimizer_state)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        if shards is not None and shards.is_dir():
            for file in shards.iterdir():
                os.replace(file, tmp / file.name)
            shutil.rmtree(shards, ignore_errors=True)
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / "rng.safetensors"))
        py_state = random.getstate()
        full_state = dict(state, optimizer=meta, scheduler=scheduler.state_dict(),
                          python_rng=[py_state[0], list(py_state[1]), py_state[2]])
        write_json(tmp / STATE_FILE, full_state)
    return folder


def read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's trainer state (step, world size, ...) without loading anything."""
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint", hint="remove it and resume from an earlier one")
    return json.loads((folder / STATE_FILE).read_text())


def load_checkpoint(folder: Path, *, load_weights: Callable[[Path], None] | None,
                    load_optimizer: Callable[[dict[str, Any]], None], scheduler: Any) -> dict[str, Any]:
    """Restore weights (unless ``load_weights`` is None: loaded before), optimizer, scheduler and RNG;
    return the saved trainer state."""
    state = read_state(folder)
    if load_weights is not None:
        load_weights(folder / "weights")
    load_optimizer(_optimizer_state(load_file(str(folder / "optimizer.safetensors")), state.pop("optimizer")))
    scheduler.load_state_dict(state.pop("scheduler"))
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    v, internal, gauss = state.pop("python_rng")
    random.setstate((v, tuple(internal), gauss))
    return state


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if re.fullmatch(r"step-\d+", p.name) and _complete(p)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _complete(folder: Path) -> bool:
    return (folder / "weights").is_dir() and all((folder / name).is_file() for name in CHECKPOINT_FILES)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (the best weights live in ``run_dir/best``, not here).

    Each is renamed to a hidden name first, so a process killed while deleting leaves no half checkpoint.
    """
    ckpts = list_checkpoints(run_dir)
    for p in ckpts[: max(0, len(ckpts) - keep)]:
        trash = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-", dir=p.parent))
        os.replace(p, trash / p.name)
        shutil.rmtree(trash, ignore_errors=True)


# what a killed atomic write leaves: hidden temporaries beside the files of a run folder
_RUN_FILES = ("manifest.json", "config.yaml", "metrics.jsonl", "red_flags.json", "adapter", "best", "tokenizer")


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporaries a killed process left in ``run_dir`` and its checkpoints; return them.

    Only for the process that owns the run (``--resume``): another one's write in progress looks the same.
    """
    removed = []
    candidates = [p for p in run_dir.iterdir() if any(p.name.startswith(f".{name}.") for name in _RUN_FILES)] \
        if run_dir.is_dir() else []
    root = run_dir / "checkpoints"
    if root.is_dir():
        candidates += [p for p in root.iterdir() if re.match(r"\.step-\d+\.(tmp|old)-", p.name)]
    for p in candidates:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
