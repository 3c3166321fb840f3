"""Model ids ↔ what to load: the base model, LoRA adapters on it, and other fine-tunes.

Every run folder under a ``--runs`` directory becomes a model. Its id follows OpenAI's shape without
the organisation: ``ft:<base>:<suffix>:<shortid>`` where ``suffix`` is the run folder's name
(sanitised) and ``shortid`` a short hash of the trained weights, so retraining gives a new id. A
fine-tune also answers to its run folder's name. Nothing here loads weights; the engine does, lazily.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailored.config.files import folder_sha256
from tailored.config.manifest import Manifest, RunFolder
from tailored.errors import TailoredError
from tailored.methods.runs import run_method
from tailored.models.registry import sanitise
from tailored.serve.lora_bank import BASE, plain_lora_problem

BASE_ADAPTER = BASE
log = logging.getLogger(__name__)


class UnknownModel(TailoredError):
    """The requested model id is not served (HTTP 404)."""

    http_status, error_type, code = 404, "invalid_request_error", "model_not_found"


def weights_hash(folder: Path) -> str:
    """8 hex digits identifying the weight files of ``folder`` (names and contents)."""
    return folder_sha256(folder)[:8]


@dataclass
class Entry:
    """One servable model.

    ``kind`` is ``base`` (the shared base), ``adapter`` (a run its method serves as a shared-base LoRA,
    batched with other adapters) or ``standalone`` (any other run: loaded on its own with
    :func:`tailored.methods.runs.load_run`).
    """

    id: str
    kind: str
    created: int
    run_dir: Path | None = None
    manifest: Manifest | None = None
    aliases: tuple[str, ...] = ()
    adapter_name: str = BASE_ADAPTER  # the engine's key for the adapter
    unsupported: str | None = None  # why this run cannot be served, shown on use
    which: str = "final"  # the run's weights: final, best or a checkpoint (step-000050)
    project: str | None = None  # None: every project sees it (the base, --runs folders); else only that project

    @property
    def weights(self) -> Path:
        assert self.run_dir is not None
        return RunFolder(self.run_dir).weights_path(self.which)

    def visible_to(self, project: str | None) -> bool:
        """Whether a key of ``project`` (None: an admin key) may see and call this model."""
        return self.project is None or project is None or self.project == project

    @property
    def group(self) -> str:
        """Requests in the same group can share a batch."""
        return "shared" if self.kind in ("base", "adapter") else self.id


def _adapter_config(weights: Path) -> dict[str, Any]:
    path = weights / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _base_matches(manifest: Manifest, base_folder: Path, base_hash: str) -> bool:
    recorded = manifest.base_model
    if recorded.content_hash and recorded.content_hash == base_hash:
        return True
    try:
        return Path(recorded.path).resolve() == base_folder.resolve()
    except OSError:
        return False


class Registry:
    """The served models; rescans the ``--runs`` folders on demand (new runs need no restart).

    Args:
        base_folder: the base model's local folder.
        base_name: the base's public id (e.g. ``smollm2-135m-instruct``).
        base_hash: the base's content hash (to check that a run was trained on this base).
        runs: run folders, or folders holding run folders (every project sees them).
        base_aliases: other names the base answers to (e.g. the ``--base`` value).
        sources: functions listing more models, each ``{"id", "project", "run", "which", "created"}``
            (the fine-tuned models and checkpoints of the jobs service).
    """

    def __init__(self, base_folder: Path, base_name: str, base_hash: str, runs: list[Path],
                 base_aliases: tuple[str, ...] = (), sources: tuple[Callable[[], list[dict[str, Any]]], ...] = ()) -> None:
        self.base_folder, self.base_name, self.base_hash = base_folder, sanitise(base_name), base_hash
        self.runs = [Path(r) for r in runs]
        self.sources = list(sources)
        self.base = Entry(self.base_name, "base", int(time.time()), aliases=tuple(a for a in base_aliases if a))
        self._entries: dict[str, Entry] = {}
        self._by_dir: dict[tuple[str, str, str, float], Entry] = {}
        self._refused: set[tuple[str, str, str, float]] = set()
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self) -> None:
        """Look for run folders again; finished runs appear, deleted ones disappear."""
        found: list[Path] = []
        for root in self.runs:
            if RunFolder(root).exists():
                found.append(root)
            elif root.is_dir():
                found.extend(sorted(p for p in root.iterdir() if p.is_dir() and RunFolder(p).exists()))
        entries = [self._entry(p) for p in found]
        for source in self.sources:
            entries += [self._entry(Path(m["run"]), which=m["which"], name=m["id"], project=m["project"])
                        for m in source()]
        with self._lock:
            self._entries = {e.id: e for e in entries if e is not None}

    def _entry(self, run_dir: Path, *, which: str = "final", name: str | None = None,
               project: str | None = None) -> Entry | None:
        """The entry of a run's weights (``which``); ``name`` and ``project`` for the jobs service's models."""
        run = RunFolder(run_dir)
        weights = run.weights_path(which)
        if not weights.is_dir():  # still training (or failed, or pruned): not servable
            return None
        key = (str(run_dir.resolve()), name or "", which, weights.stat().st_mtime)
        if key in self._by_dir:
            return self._by_dir[key]
        try:
            manifest = run.read()
            method, options = run_method(manifest)
        except TailoredError as exc:  # a damaged manifest or a method this install lacks: not served, said once
            if key not in self._refused:
                self._refused.add(key)
                log.warning("not serving %s: %s", run_dir, exc)
            return None
        serving = method.serving(options)
        short = weights_hash(weights)
        matches = _base_matches(manifest, self.base_folder, self.base_hash)
        # the method says how its runs are served; the bank still checks that the adapter is plain LoRA
        shared = serving.mode == "shared_lora" and matches and plain_lora_problem(_adapter_config(weights)) is None
        base = self.base_name if matches else sanitise(manifest.base_model.name or "base")
        entry = Entry(
            id=name or f"ft:{base}:{sanitise(run_dir.name)}:{short}", kind="adapter" if shared else "standalone",
            created=int(weights.stat().st_mtime), run_dir=run_dir, manifest=manifest,
            aliases=() if name else (run_dir.name,), adapter_name=f"ft_{short}", which=which, project=project,
        )
        if serving.mode == "unservable":
            entry.unsupported = f"run {run_dir.name}: {serving.reason}".replace("RUN", str(run_dir))
        self._by_dir[key] = entry
        return entry

    def models(self, project: str | None = None) -> list[Entry]:
        """The base first, then every fine-tune ``project`` may see (None: all); rescans first."""
        self.rescan()
        with self._lock:
            found = sorted((e for e in self._entries.values() if e.visible_to(project)), key=lambda e: e.id)
        return [self.base, *found]

    def resolve(self, name: str, project: str | None = None) -> Entry:
        """The entry for an id or alias that ``project`` may use; rescans once before giving up.

        Raises:
            UnknownModel: nothing of that name is served to ``project`` (another project's model included).
        """
        for attempt in range(2):
            found = self._find(name)
            if found is not None and found.visible_to(project):
                return found
            if attempt == 0:
                self.rescan()
        served = ", ".join(e.id for e in self.models(project)[:5])
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

