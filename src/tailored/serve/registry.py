"""Model ids ↔ what to load: the base model, LoRA adapters on it, and other fine-tunes.

Every run folder under a ``--runs`` directory becomes a model. Its id follows OpenAI's shape without
the organisation: ``ft:<base>:<suffix>:<shortid>`` where ``suffix`` is the run folder's name
(sanitised) and ``shortid`` a short hash of the trained weights, so retraining gives a new id. A
fine-tune also answers to its run folder's name. Nothing here loads weights; the engine does, lazily.

A run folder that cannot be served (a damaged or other-version manifest, weights that are not valid
safetensors or are pickles, no final weights yet, or weights that failed to load) is never listed and
never stops a scan: it is :class:`Unavailable`, with the reason, which ``GET /v1/models/{run}`` and a
chat request for it answer with (404), ``tailored serve`` prints on start, and ``/v1/stats`` lists.
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
from tailored.errors import CheckpointError, TailoredError
from tailored.methods.runs import run_method
from tailored.models.registry import sanitise
from tailored.engine.lora import BASE, plain_lora_problem

BASE_ADAPTER = BASE
log = logging.getLogger(__name__)


class UnknownModel(TailoredError):
    """The requested model id is not served (HTTP 404)."""

    http_status, error_type, code = 404, "invalid_request_error", "model_not_found"


def weights_hash(folder: Path) -> str:
    """8 hex digits identifying the weight files of ``folder`` (names and contents)."""
    return folder_sha256(folder)[:8]


@dataclass(frozen=True)
class Unavailable:
    """A run folder that is not served, and why (the reason names the run, never the server's paths)."""

    run: str  # the run folder's name
    reason: str
    project: str | None = None  # as Entry.project
    name: str | None = None  # the jobs service's model id, if it is one
    model_id: str | None = None  # the id it was served under, if it was (weights that failed to load)

    def visible_to(self, project: str | None) -> bool:
        return self.project is None or project is None or self.project == project

    def names(self) -> tuple[str, ...]:
        """What a client may call it: the jobs model id, else the run folder's name; and its former id."""
        return tuple(dict.fromkeys(n for n in (self.name or self.run, self.model_id) if n))


def weights_problem(folder: Path, run_dir: Path | None = None) -> str | None:
    """Why the weights folder cannot be read safely (None when every weight file is a valid safetensors file).

    Reads only the files' headers (a few KB), so a scan stays fast; pickled weights (``.bin`` ...) are
    never loaded, so a folder holding only those is refused here, by name. Files are named relative to
    ``run_dir``.
    """
    from safetensors import safe_open

    where = folder.relative_to(run_dir).as_posix() if run_dir is not None and folder.is_relative_to(run_dir) else folder.name
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            return (f"{where}/ holds {', '.join(pickles)} but no .safetensors file; Tailored loads only safetensors "
                    "weights (a pickle can run code when loaded)")
        return f"{where}/ holds no .safetensors weights"
    for f in files:
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception:  # noqa: BLE001 - any reason: the file is not what it claims
            return f"{where}/{f.name} is not a valid safetensors file (damaged or truncated)"
    return None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


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
    which: str = "final"  # the run's weights: final, best or a checkpoint (step-000050); a scan resolves "auto"
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
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged (not valid JSON: {exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is damaged (expected a JSON object)")
    return cfg


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
        self._unavailable: dict[str, Unavailable] = {}  # by run folder name (or jobs model id)
        self._by_dir: dict[tuple[str, str, str, float], Entry | Unavailable] = {}
        self._failed: dict[tuple[str, str, str], tuple[float, str, str]] = {}  # failed to load: (mtime, reason, id)
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self) -> None:
        """Look for run folders again; finished runs appear, deleted ones disappear (never raises for a run)."""
        found: list[Path] = []
        for root in self.runs:
            try:
                if RunFolder(root).exists():
                    found.append(root)
                elif root.is_dir():
                    found.extend(sorted(p for p in root.iterdir() if p.is_dir() and RunFolder(p).exists()))
            except OSError as exc:  # a folder that vanished or cannot be read: the others are still served
                log.warning("cannot scan %s: %s", root, exc)
        results = [self._entry(p) for p in found]
        for source in self.sources:
            results += [self._entry(Path(m["run"]), which=m["which"], name=m["id"], project=m["project"])
                        for m in source()]
        with self._lock:
            self._entries = {e.id: e for e in results if isinstance(e, Entry)}
            self._unavailable = {n: u for u in results if isinstance(u, Unavailable) for n in u.names()}

    def _entry(self, run_dir: Path, *, which: str = "auto", name: str | None = None,
               project: str | None = None) -> Entry | Unavailable:
        """The entry of a run's weights (``which``; ``auto``: the best validation step's when the finished run kept them,
        else the final ones), or why it is not served; ``name``, ``project``: the jobs service's."""
        try:
            return self._read_entry(run_dir, which, name, project)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with one run folder, the others are served
            return self._refuse(run_dir, name, project, _reason(exc, run_dir), exc)

    def _refuse(self, run_dir: Path, name: str | None, project: str | None, reason: str,
                exc: BaseException | None = None) -> Unavailable:
        """The run is not served: logged once per run and reason (scans run on every ``GET /v1/models``)."""
        if (str(run_dir), reason) not in self._warned:
            self._warned.add((str(run_dir), reason))
            log.warning("not serving run %s: %s", run_dir, reason, exc_info=None if isinstance(exc, TailoredError) else exc)
        return Unavailable(run_dir.name, reason, project, name)

    def _read_entry(self, run_dir: Path, which: str, name: str | None, project: str | None) -> Entry | Unavailable:
        run = RunFolder(run_dir)
        which = run.pick(which)
        weights = run.weights_path(which)
        if not weights.is_dir():  # still training (or failed, or pruned)
            where = weights.relative_to(run_dir) if weights.is_relative_to(run_dir) else weights.name
            return Unavailable(run_dir.name, f"has no final weights ({where}/) yet: still training, or training failed",
                               project, name)
        mtime = weights.stat().st_mtime
        key = (str(run_dir.resolve()), name or "", which, mtime)
        failed = self._failed.get(key[:3])
        if failed is not None and failed[0] == mtime:
            return Unavailable(run_dir.name, failed[1], project, name, failed[2])
        if key in self._by_dir:
            return self._by_dir[key]
        try:
            manifest = run.read()
            method, options = run_method(manifest)
        except TailoredError as exc:  # a damaged manifest or a method this install lacks
            self._by_dir[key] = self._refuse(run_dir, name, project, _reason(exc, run_dir), exc)
            return self._by_dir[key]
        problem = weights_problem(weights, run_dir)
        if problem is None:
            try:
                adapter_config = _adapter_config(weights)
            except TailoredError as exc:
                problem = _reason(exc, run_dir)
        if problem is not None:
            self._by_dir[key] = self._refuse(run_dir, name, project, problem)
            return self._by_dir[key]
        serving = method.serving(options)
        short = weights_hash(weights)
        matches = _base_matches(manifest, self.base_folder, self.base_hash)
        # the method says how its runs are served; the bank still checks that the adapter is plain LoRA
        shared = serving.mode == "shared_lora" and matches and plain_lora_problem(adapter_config) is None
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

    def mark_unavailable(self, entry: Entry, problem: BaseException) -> str:
        """``entry``'s weights failed to load: stop offering it (until its weights folder changes); the reason."""
        if entry.run_dir is None:
            return "the base model failed"
        reason = "its weights cannot be loaded" + (f": {_reason(problem, entry.run_dir)}"
                                                   if isinstance(problem, TailoredError) else "")
        try:
            mtime = entry.weights.stat().st_mtime
        except OSError:
            mtime = -1.0
        key = (str(entry.run_dir.resolve()), "" if entry.aliases else entry.id, entry.which)
        self._failed[key] = (mtime, reason, entry.id)
        unavailable = Unavailable(entry.run_dir.name, reason, entry.project, None if entry.aliases else entry.id, entry.id)
        with self._lock:
            self._entries.pop(entry.id, None)
            self._unavailable.update(dict.fromkeys(unavailable.names(), unavailable))
        return reason

    def unavailable(self, project: str | None = None) -> list[Unavailable]:
        """The run folders found but not served, and why (those ``project`` may see; None: all)."""
        with self._lock:
            found = {id(u): u for u in self._unavailable.values() if u.visible_to(project)}
        return sorted(found.values(), key=lambda u: u.run)

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
        with self._lock:
            why = self._unavailable.get(name)
        if why is not None and why.visible_to(project):
            raise UnknownModel(f"The model `{name}` is not served: run folder {why.run}: {why.reason}",
                               hint="fix or retrain the run; the server picks it up without a restart")
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


def _reason(problem: BaseException, run_dir: Path) -> str:
    """Why a run is not served, naming the run's own files, never the server's paths."""
    if not isinstance(problem, TailoredError):
        return f"cannot be read ({type(problem).__name__}; the server log has the details)"
    text = problem.message
    for path in (str(run_dir.resolve()), str(run_dir)):
        text = text.replace(path + "/", "").replace(path, run_dir.name)
    return text
