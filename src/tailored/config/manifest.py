"""The run folder and its ``manifest.json``: one typed owner that every layer reads and writes through.

A run folder is what ``tailored train`` leaves behind; export, eval, serve and the jobs service trust
it and never ask again. :class:`Manifest` says what the run is (base model, method, hyperparameters,
data and their hashes, the chat template and stop tokens of training, versions, final metrics);
:class:`RunFolder` names the files beside it and reads and writes the manifest atomically. A
manifest from another version of Tailored, or a damaged one, is refused with a
:class:`~tailored.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tailored.config.files import write_json
from tailored.errors import CheckpointError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1  # bump when a field changes meaning; readers refuse other versions by name


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def versions() -> dict[str, str]:
    """Python's and the main packages' versions (recorded in manifests and exports)."""
    out = {"python": platform.python_version()}
    for pkg in ("tailored", "torch", "transformers", "peft", "accelerate", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseModelRecord(_Record):
    spec: str  # what the user asked for (``smollm2``, a folder, a .gguf, a hub id)
    kind: str  # embedded, gguf, hf_dir, hub
    name: str
    path: str  # the local safetensors folder trained on
    content_hash: str


class MethodRecord(_Record):
    name: str
    options: dict[str, Any]
    mergeable: bool
    weights: str = "adapter"  # the folder of the final weights, inside the run folder


class DataFileRecord(_Record):
    path: str
    sha256: str
    format: str | None = None
    examples: int
    used: int
    skipped_too_long: list[int] = Field(default_factory=list)  # line numbers
    truncated: list[int] = Field(default_factory=list)
    held_out: Literal["auto"] | None = None  # validation only: "auto" when held out of the training file (validation: auto)
    stratified_by: str | None = None  # how the held-out examples were chosen
    lines: list[int] = Field(default_factory=list)  # the held-out examples' lines in the training file


class DataRecord(_Record):
    train: DataFileRecord
    validation: DataFileRecord | None = None


class NeighboursRecord(_Record):
    """The labelled training requests listed in each prompt (``neighbours: K``; files in ``neighbours/``)."""

    k: int
    requests: int  # in the index: the training examples
    embedder: str  # the sentence-embedding model that placed them
    sha256: str  # of the index's requests file


class ParameterCounts(_Record):
    trainable: int
    total: int


class Environment(_Record):
    versions: dict[str, str]
    device: str
    processes: int
    threads: int
    strategy: str = "ddp"  # how the processes shared the model (docs/distributed.md)
    nodes: int = 1
    engine_config: dict[str, Any] = Field(default_factory=dict)  # FSDP2's settings or DeepSpeed's config as used
    strategy_config: dict[str, str] | None = None  # the user's own engine config file: path and sha256
    state_bytes_per_process: int | None = None  # weights + optimizer states one process held after training (mean)


class RunMetrics(_Record):
    initial_validation_loss: float | None = None
    train_loss: float | None = None
    validation_loss: float | None = None
    best_validation_loss: float | None = None
    best_step: int | None = None
    steps: int = 0
    seconds: float = 0.0
    real_tokens: int = 0
    tokens_per_s: float = 0.0


class LineageRecord(_Record):
    """The run this one continued from (``from_run``), and what it was continued on."""

    parent: str  # the parent run folder
    parent_created: str
    parent_weights: str  # hash of the parent's final weights when they were loaded
    data: str  # the new data file given (the manifest's ``data.train`` is what was trained on: new + old mixed)
    data_sha256: str
    mix_old: float = 0.0


class Manifest(_Record):
    """What a run folder is. Field names are the keys of ``manifest.json``."""

    tailored_manifest: int = MANIFEST_VERSION
    status: Literal["running", "completed", "interrupted"] = "running"
    created: str = Field(default_factory=now)
    updated: str | None = None
    base_model: BaseModelRecord
    method: MethodRecord
    hyperparameters: dict[str, Any]
    config: dict[str, Any]  # the resolved TrainConfig (method options nested)
    data: DataRecord
    chat_template: str | None
    eos_token: str | None
    eos_token_ids: list[int]
    parameters: ParameterCounts
    environment: Environment
    metrics: RunMetrics | None = None
    stopped_early: bool = False
    best_checkpoint: str | None = None
    red_flags: dict[str, str] | None = None  # level, verdict and one verdict per flag (eval's post-train check)
    labels: list[str] | None = None  # a classification run's label set, from its training data (eval's post-train hook)
    neighbours: NeighboursRecord | None = None  # prompts list their nearest labelled training requests (models.neighbours)
    lineage: LineageRecord | None = None  # set when the run continued another (from_run)


@dataclass(frozen=True)
class RunFolder:
    """The files of one run. Paths are properties; nothing is read until asked."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    @property
    def final(self) -> Path:
        """The final trained weights (``adapter/``, whatever the method)."""
        return self.path / "adapter"

    @property
    def best(self) -> Path:
        """The weights of the best validation step."""
        return self.path / "best"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def evals(self) -> Path:
        return self.path / "evals"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def neighbours(self) -> Path:
        """The labelled-neighbours index (the manifest's ``neighbours`` says whether the run has one)."""
        return self.path / "neighbours"

    @property
    def red_flags(self) -> Path:
        return self.path / "red_flags.json"

    def exists(self) -> bool:
        """Whether this is a run folder (it has a manifest)."""
        return self.manifest_file.is_file()

    def pick(self, which: str = "auto") -> str:
        """The weights ``which`` names: ``auto`` (the default everywhere) is ``best`` when the run kept the weights of
        its best validation step, else ``final``; any other name is returned as it is."""
        if which != "auto":
            return which
        return "best" if self.best.is_dir() and self.final.is_dir() else "final"  # a finished run's best, never mid-training

    def weights_path(self, which: str = "auto") -> Path:
        """Where the weights ``which`` (``auto``, ``final``, ``best``, a checkpoint name like ``step-000050``) are kept."""
        which = self.pick(which)
        return {"final": self.final, "best": self.best}.get(which) or self.checkpoints / which / "weights"

    def describe_weights(self, which: str = "auto") -> str:
        """Which weights ``which`` is, for people: ``best (step 40 of 60, validation loss 1.234)`` or ``final``."""
        chosen = self.pick(which)
        try:
            metrics = self.read().metrics
        except CheckpointError:
            metrics = None
        if chosen == "best" and metrics is not None and metrics.best_step:
            loss = f", validation loss {metrics.best_validation_loss:.4f}" if metrics.best_validation_loss is not None else ""
            return f"best (step {metrics.best_step} of {metrics.steps}{loss}; --which final for the last step's)"
        if chosen == "final" and which == "auto":
            return "final (the run kept no best validation step)"
        return chosen

    def weights(self, which: str = "auto") -> Path:
        """The weights ``which`` (see :meth:`weights_path`); raises when they are not there."""
        path = self.weights_path(which)
        if not path.is_dir():
            raise CheckpointError(f"{path} does not exist", hint="did the run finish? `tailored train --resume` continues it")
        return path

    def read(self) -> Manifest:
        """The manifest, checked; a missing, damaged or other-version one raises CheckpointError naming the file."""
        path = self.manifest_file
        if not path.is_file():
            raise CheckpointError(f"{self.path} is not a run folder (no {MANIFEST})", hint="pass the folder `tailored train` printed")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise CheckpointError(f"{path} is damaged (not valid JSON: {str(exc).split('; ')[0]})",
                                  hint="restore it from a backup, or train the run again") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} is damaged (expected a JSON object)", hint="train the run again")
        version = data.get("tailored_manifest")
        if version != MANIFEST_VERSION:
            newer = isinstance(version, int) and version > MANIFEST_VERSION
            raise CheckpointError(
                f"{path} has manifest version {version!r}; this Tailored reads version {MANIFEST_VERSION}",
                hint="upgrade Tailored to read it" if newer else "train the run again with this version of Tailored")
        try:
            return Manifest.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise CheckpointError(f"{path} is damaged ({problems})", hint="train the run again") from None

    def write(self, manifest: Manifest) -> Manifest:
        """Write the manifest atomically (stamping ``updated``) and return what was written."""
        manifest = manifest.model_copy(update={"updated": now()})
        write_json(self.manifest_file, manifest.model_dump(mode="json"))
        return manifest

    def update(self, **fields: Any) -> Manifest:
        """Read, change ``fields`` (validated), write atomically; returns the new manifest."""
        current = self.read().model_dump()
        current.update(fields)
        return self.write(Manifest.model_validate(current))


def is_run_dir(path: str | Path) -> bool:
    return RunFolder(path).exists()
