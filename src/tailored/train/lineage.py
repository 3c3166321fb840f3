"""``from_run``: continue a fine-tune from a finished run's weights, on new data, optionally mixed with the old.

``tailored train --from RUN --data new.jsonl [--mix-old 0.2]``:

- the new run starts from RUN's final weights; what makes those weights loadable must be the same
  (base model weights, method and its options, chat template) and is checked, every difference named.
  Settings not given are the parent's (model, method and its options, format, max_seq_length,
  overlength, batching), so ``--from RUN --data new.jsonl`` is enough;
- ``mix_old`` is the share of the training set drawn from the parent's training data (seeded), so the
  old task is still seen (against forgetting); the mixed file is written into the new run folder
  (``data/train-mixed.jsonl``) and is what the manifest records as trained on;
- the manifest's ``lineage`` names the parent (path, weights hash, created), the new data file and the
  mix, so ``tailored eval`` compares the new run with its parent by default.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailored.config.files import file_sha256, folder_sha256
from tailored.config.load import read_yaml
from tailored.config.manifest import LineageRecord, Manifest, RunFolder
from tailored.errors import CheckpointError, ConfigError, DataError

INHERITED = ("model", "method", "format", "max_seq_length", "overlength", "batching")
MIXED = "train-mixed.jsonl"


@dataclass
class Parent:
    run: RunFolder
    manifest: Manifest

    @property
    def weights(self) -> Path:
        return self.run.weights("final")


def _parent_run(path: str) -> Parent:
    run = RunFolder(path)
    if not run.exists():
        raise CheckpointError(f"from_run {path}: not a run folder (no manifest.json)",
                              hint="pass the folder `tailored train` printed for the run to continue")
    manifest = run.read()
    if manifest.status != "completed":
        raise CheckpointError(f"from_run {path}: the run is {manifest.status}, not completed",
                              hint=f"finish it first (`tailored train --resume --output {path}`)")
    run.weights("final")
    return Parent(run, manifest)


def inherit(settings: dict[str, Any], config_file: str | None, method_fields: dict[str, set[str]]) -> dict[str, Any]:
    """``settings`` with the parent's model, method, method options and data shape under what is given."""
    given = {**(read_yaml(config_file) if config_file else {}), **{k: v for k, v in settings.items() if v is not None}}
    source = given.get("from_run")
    if not source:
        return settings
    parent = _parent_run(str(source))
    saved = read_yaml(parent.run.config_file) if parent.run.config_file.is_file() else {}
    out = {k: saved[k] for k in INHERITED if k in saved and k not in given}
    if given.get("method", parent.manifest.method.name) == parent.manifest.method.name:
        fields = method_fields.get(parent.manifest.method.name, set())
        out.update({k: v for k, v in parent.manifest.method.options.items() if k in fields and k not in given})
    return {**out, **settings}


def parent_of(cfg: Any) -> Parent | None:
    """The run ``cfg.from_run`` names (None without one); refuses a mix without a parent."""
    if not cfg.from_run:
        if cfg.mix_old:
            raise ConfigError("mix_old needs from_run: it mixes in the training data of the run continued from",
                              hint="add --from RUN, or leave --mix-old out")
        return None
    return _parent_run(cfg.from_run)


def training_data(cfg: Any, parent: Parent | None, run_dir: Path) -> Any:
    """``cfg`` with ``data`` the file to train on: the new data, mixed with the parent's when ``mix_old`` > 0."""
    if parent is None or not cfg.mix_old:
        return cfg
    from tailored.data.readers import example_to_chat, read_records, write_jsonl

    old_path = Path(parent.manifest.data.train.path)
    if not old_path.is_file() or file_sha256(old_path) != parent.manifest.data.train.sha256:
        raise DataError(f"mix_old: the parent's training data {old_path} is missing or changed since it trained",
                        hint="restore it, or train without --mix-old")
    new = read_records(cfg.data)
    if new.problems:  # the data check names them properly: train on the file as it is and let it refuse
        return cfg
    old = read_records(old_path).examples
    want = round(cfg.mix_old / (1 - cfg.mix_old) * len(new.examples))
    picked = random.Random(cfg.seed).sample(old, min(want, len(old)))
    rows = [example_to_chat(e) for e in new.examples] + [example_to_chat(e) for e in picked]
    random.Random(cfg.seed + 1).shuffle(rows)
    path = run_dir / "data" / MIXED
    write_jsonl(path, rows)
    return cfg.model_copy(update={"data": str(path)})


def adopt(parent: Parent, manifest: Manifest, cfg: Any, load_state: Any) -> LineageRecord:
    """Check that the parent's weights fit the new run, load them (``load_state(folder)``); the lineage record."""
    old = parent.manifest
    problems = []
    if old.base_model.content_hash != manifest.base_model.content_hash:
        problems.append(f"base model: {old.base_model.spec} (weights {old.base_model.content_hash[:12]}) in the parent, "
                        f"{manifest.base_model.spec} (weights {manifest.base_model.content_hash[:12]}) now")
    if old.method.name != manifest.method.name:
        problems.append(f"method: {old.method.name} in the parent, {manifest.method.name} now")
    else:
        problems += [f"{k}: {old.method.options.get(k)} in the parent, {manifest.method.options.get(k)} now"
                     for k in sorted(set(old.method.options) | set(manifest.method.options))
                     if old.method.options.get(k) != manifest.method.options.get(k)]
    if old.chat_template != manifest.chat_template:
        problems.append("chat template: the tokenizer's template differs from the one the parent was trained with")
    if problems:
        raise CheckpointError(f"from_run {parent.run.path}: the new run cannot continue its weights:\n"
                              + "\n".join(f"  - {p}" for p in problems),
                              hint="leave these settings out (they default to the parent's), or train from the base")
    load_state(parent.weights)
    return LineageRecord(parent=str(parent.run.path.resolve()), parent_created=old.created,
                         parent_weights=folder_sha256(parent.weights)[:16], data=str(Path(cfg.data).resolve()),
                         data_sha256=file_sha256(cfg.data), mix_old=cfg.mix_old)
