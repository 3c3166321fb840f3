"""Model ids ↔ what to load: the base model, LoRA adapters on it, and other fine-tunes.

Every run folder under a ``--runs`` directory becomes a model. Its id follows OpenAI's shape without
the organisation: ``ft:<base>:<suffix>:<shortid>`` where ``suffix`` is the run folder's name
(sanitised) and ``shortid`` a short hash of the trained weights, so retraining gives a new id. A
fine-tune also answers to its run folder's name. Nothing here loads weights; the engine does, lazily.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.errors import TailoredError
from tailored.serve.lora_bank import BASE, plain_lora_problem

BASE_ADAPTER = BASE


class UnknownModel(TailoredError):
    """The requested model id is not served (HTTP 404)."""

    http_status, error_type, code = 404, "invalid_request_error", "model_not_found"


def sanitise(name: str) -> str:
    """Lower-case, with anything outside ``[a-z0-9._-]`` replaced by ``-`` (ids never hold ``/`` or ``:``)."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "model"


def weights_hash(folder: Path) -> str:
    """8 hex digits identifying the weight files of ``folder`` (names, sizes and contents)."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:8]


@dataclass
class Entry:
    """One servable model.

    ``kind`` is ``base`` (the shared base), ``adapter`` (a plain LoRA run served on the shared base,
    batched with other adapters) or ``standalone`` (any other run: loaded on its own with
    :func:`tailored.methods.runs.load_run`).
    """

    id: str
    kind: str
    created: int
    run_dir: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    adapter_name: str = BASE_ADAPTER  # the engine's key for the adapter
    unsupported: str | None = None  # why this run cannot be served, shown on use

    @property
    def group(self) -> str:
        """Requests in the same group can share a batch."""
        return "shared" if self.kind in ("base", "adapter") else self.id


def _adapter_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "adapter" / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _base_matches(manifest: dict[str, Any], base_folder: Path, base_hash: str) -> bool:
    recorded = manifest.get("base_model") or {}
    if recorded.get("content_hash") and recorded["content_hash"] == base_hash:
        return True
    try:
        return Path(recorded.get("path", "")).resolve() == base_folder.resolve()
    except OSError:
        return False


class Registry:
    """The served models; rescans the ``--runs`` folders on demand (new runs need no restart).

    Args:
        base_folder: the base model's local folder.
        base_name: the base's public id (e.g. ``smollm2-135m-instruct``).
        base_hash: the base's content hash (to check that a run was trained on this base).
        runs: run folders, or folders holding run folders.
        base_aliases: other names the base answers to (e.g. the ``--base`` value).
    """

    def __init__(self, base_folder: Path, base_name: str, base_hash: str, runs: list[Path],
                 base_aliases: tuple[str, ...] = ()) -> None:
        self.base_folder, self.base_name, self.base_hash = base_folder, sanitise(base_name), base_hash
        self.runs = [Path(r) for r in runs]
        self.base = Entry(self.base_name, "base", int(time.time()), aliases=tuple(a for a in base_aliases if a))
        self._entries: dict[str, Entry] = {}
        self._by_dir: dict[tuple[str, float], Entry] = {}
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self) -> None:
        """Look for run folders again; finished runs appear, deleted ones disappear."""
        from tailored.train.manifest import is_run_dir

        found: list[Path] = []
        for root in self.runs:
            if is_run_dir(root):
                found.append(root)
            elif root.is_dir():
                found.extend(sorted(p for p in root.iterdir() if p.is_dir() and is_run_dir(p)))
        entries = [self._entry(p) for p in found]
        with self._lock:
            self._entries = {e.id: e for e in entries if e is not None}

    def _entry(self, run_dir: Path) -> Entry | None:
        weights = run_dir / "adapter"
        if not weights.is_dir():  # still training (or failed): not servable yet
            return None
        key = (str(run_dir.resolve()), weights.stat().st_mtime)
        if key in self._by_dir:
            return self._by_dir[key]
        from tailored.methods.runs import read_run

        manifest = read_run(run_dir)
        short = weights_hash(weights)
        cfg = _adapter_config(run_dir)
        matches = _base_matches(manifest, self.base_folder, self.base_hash)
        lora = bool(cfg) and plain_lora_problem(cfg) is None
        # a LoRA trained on a quantized base (QLoRA) is served as trained: on its quantized base, alone
        kind = "adapter" if lora and matches and not _quantized_base(manifest) else "standalone"
        base = self.base_name if matches else sanitise((manifest.get("base_model") or {}).get("name") or "base")
        entry = Entry(
            id=f"ft:{base}:{sanitise(run_dir.name)}:{short}", kind=kind, created=int(weights.stat().st_mtime),
            run_dir=run_dir, manifest=manifest, aliases=(run_dir.name,), adapter_name=f"ft_{short}",
        )
        if _is_prompt_learning(cfg):
            entry.unsupported = (f"run {run_dir.name} uses {manifest['method']['name']} (prompt learning), which the "
                                 f"server's KV-cache decoder does not support; use `tailored chat {run_dir}` instead")
        self._by_dir[key] = entry
        return entry

    def models(self) -> list[Entry]:
        """The base first, then every fine-tune (rescans first)."""
        self.rescan()
        with self._lock:
            return [self.base, *sorted(self._entries.values(), key=lambda e: e.id)]

    def resolve(self, name: str) -> Entry:
        """The entry for an id or alias; rescans once before giving up.

        Raises:
            UnknownModel: nothing of that name is served.
        """
        for attempt in range(2):
            found = self._find(name)
            if found is not None:
                return found
            if attempt == 0:
                self.rescan()
        served = ", ".join(e.id for e in self.models()[:5])
        raise UnknownModel(f"The model `{name}` does not exist", hint=f"served models: {served}")

    def _find(self, name: str) -> Entry | None:
        if name == self.base.id or name in self.base.aliases:
            return self.base
        with self._lock:
            if name in self._entries:
                return self._entries[name]
            for e in self._entries.values():
                if name in e.aliases:
                    return e
        return None


def _quantized_base(manifest: dict[str, Any]) -> bool:
    """Whether the run's method loads its base quantized (then its outputs depend on that quantization)."""
    from tailored.methods.base import get_method, parse_options

    method = manifest.get("method") or {}
    try:
        m = get_method(method.get("name", ""))
        return bool(m.base_load_kwargs(parse_options(m, method.get("options") or {}), "cpu"))
    except TailoredError:  # unknown method or missing backend: judge by name
        return method.get("name") == "qlora"


def _is_prompt_learning(cfg: dict[str, Any]) -> bool:
    return cfg.get("peft_type") in ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING",
                                    "ADAPTION_PROMPT", "CPT")
