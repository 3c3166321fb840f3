"""A running job's progress, read from its run folder: metrics events, checkpoints, ETA, the results CSV.

Training writes ``metrics.jsonl`` (a line per step and per validation) and ``checkpoints/step-N``;
nothing else is needed to follow it, whatever launched it. The cursor ``(step, 0 train | 1
validation)`` marks the last line reported, so a resumed run (whose log is cut back to its
checkpoint and written again) reports each step exactly once; each metrics event also carries that
key, which the store records once, so not even a crash between an event and its cursor repeats it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from tailored.config.manifest import RunFolder
from tailored.data.check import format_seconds
from tailored.data.jsonl import read_json_rows
from tailored.train.checkpoint import list_checkpoints


def _records(run: RunFolder) -> list[dict[str, Any]]:
    return read_json_rows(run.metrics)  # a line being written right now is skipped, read next time


def _key(record: dict[str, Any]) -> tuple[int, int]:
    return int(record["step"]), 0 if record["split"] == "train" else 1


class Follower:
    """Reads a run folder incrementally; ``cursor`` is the last (step, split) reported."""

    def __init__(self, run: RunFolder, cursor: tuple[int, int] = (-1, 1)) -> None:
        self.run, self.cursor = run, tuple(cursor)
        self.hyperparameters: dict[str, Any] | None = None
        self.total_steps: int | None = None
        self.eta: float | None = None
        self._by_step: dict[int, dict[str, Any]] = {}

    def new_events(self) -> Iterator[dict[str, Any]]:
        """Metrics events for the lines after the cursor (message and data as OpenAI's events carry them)."""
        if self.hyperparameters is None and self.run.exists():
            try:
                self.hyperparameters = self.run.read().hyperparameters
                self.total_steps = int(self.hyperparameters["total_steps"])
            except Exception:  # noqa: BLE001 - being written; read next time
                self.hyperparameters = None
        records = _records(self.run)
        for record in records:  # all first: a step's checkpoint metrics include its validation
            self._remember(record)
        for record in records:
            key = _key(record)
            if key <= self.cursor:
                continue
            self.cursor = key
            yield self._event(record)

    def _remember(self, record: dict[str, Any]) -> None:
        at = self._by_step.setdefault(int(record["step"]), {"step": int(record["step"])})
        if record["split"] == "train":
            at.update(train_loss=record["loss"], train_mean_token_accuracy=record.get("token_accuracy"))
            elapsed = record.get("elapsed_s")
            if elapsed and self.total_steps and record["step"]:
                self.eta = max(0.0, float(elapsed) / int(record["step"]) * (self.total_steps - int(record["step"])))
        else:
            at.update(valid_loss=record["loss"], valid_mean_token_accuracy=record.get("token_accuracy"),
                      full_valid_loss=record["loss"], full_valid_mean_token_accuracy=record.get("token_accuracy"))

    def _event(self, record: dict[str, Any]) -> dict[str, Any]:
        step, total = int(record["step"]), self.total_steps
        of = f"{step}/{total}" if total else str(step)
        if record["split"] == "train":
            eta = f", ETA {format_seconds(self.eta)}" if self.eta is not None and total and step < total else ""
            message = f"Step {of}: training loss={record['loss']:.4f}{eta}"
            data = {"step": step, "total_steps": total, "train_loss": record["loss"],
                    "train_mean_token_accuracy": record.get("token_accuracy"), "learning_rate": record.get("learning_rate"),
                    "tokens_per_s": record.get("tokens_per_s"), "eta_s": round(self.eta) if self.eta is not None else None}
        else:
            when = " (before training)" if step == 0 else ""
            message = f"Step {of}: validation loss={record['loss']:.4f}{when}"
            data = {"step": step, "total_steps": total, "valid_loss": record["loss"],
                    "valid_mean_token_accuracy": record.get("token_accuracy")}
        return {"message": message, "data": data, "key": f"{record['split']}:{step}"}

    def metrics_at(self, step: int) -> dict[str, Any]:
        """The checkpoint metrics of ``step``: its training loss and accuracy, and validation when it ran there."""
        return {k: v for k, v in self._by_step.get(step, {"step": step}).items() if v is not None}

    def checkpoints(self) -> list[tuple[int, dict[str, Any]]]:
        """(step, metrics) of every complete checkpoint folder."""
        found = list_checkpoints(self.run.path) if self.run.path.is_dir() else []
        steps = [int(p.name.split("-")[1]) for p in found]
        return [(s, self.metrics_at(s)) for s in steps]


def results_csv(run: RunFolder) -> str:
    """OpenAI's results file: ``step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy``, a row per step."""
    rows: dict[int, dict[str, Any]] = {}
    for record in _records(run):
        at = rows.setdefault(int(record["step"]), {})
        if record["split"] == "train":
            at.update(train_loss=record["loss"], train_accuracy=record.get("token_accuracy"))
        else:
            at.update(valid_loss=record["loss"], valid_mean_token_accuracy=record.get("token_accuracy"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ("train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
    writer.writerow(("step", *columns))
    for step in sorted(s for s in rows if "train_loss" in rows[s]):
        writer.writerow((step, *("" if rows[step].get(c) is None else rows[step][c] for c in columns)))
    return out.getvalue()

