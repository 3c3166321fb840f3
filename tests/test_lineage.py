"""``tailored train --from RUN [--mix-old]``: a run continues its parent's weights; the lineage is in the manifest.

Tiny in-memory models: the parent (full fine-tuning, which a tiny model learns fast) trains 24 steps; the child's first step (whose loss is
computed before any update) must start where the parent ended, not where a fresh adapter starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tailored
from tailored.cli.main import main
from tailored.config.manifest import RunFolder
from tailored.errors import CheckpointError, ConfigError
from tailored.eval.run import evaluate
from tailored.testing.tiny import write_chat_dataset

COMMON = {"method": "full", "batch_size": 8, "max_seq_length": 64, "threads": 1, "red_flags": "off", "lr_schedule": "constant"}


def train_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in sorted(rows, key=lambda r: r["step"]) if r.get("split") == "train"]


@pytest.fixture(scope="module")
def parent(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lineage")
    data = write_chat_dataset(root / "old.jsonl", n=48)
    tailored.train(data=str(data), model=str(tiny_model_dir), max_steps=24, learning_rate_multiplier=100,
                   output=str(root / "parent"), **COMMON)
    return root / "parent", data


def test_from_continues_the_parents_weights_and_records_the_lineage(parent: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = parent
    losses = train_losses(run)
    assert losses[0] - losses[-1] > 1.0  # the parent learnt something, so "where it ended" is far from the start
    child = tmp_path / "child"
    # the CLI's --from; the model and method are the parent's without being given
    assert main(["train", "--from", str(run), "--data", str(data), "--max-steps", "2", "--batch-size", "8",
                 "--threads", "1", "--red-flags", "off", "--output", str(child)]) == 0
    first = train_losses(child)[0]
    ended = sum(losses[-4:]) / 4
    noise = max(losses[-4:]) - min(losses[-4:])
    print(f"parent: first {losses[0]:.3f}, last 4 mean {ended:.3f} (spread {noise:.3f}); child first step {first:.3f}")
    assert abs(first - ended) <= max(2 * noise, 0.15) and losses[0] - first > 1.0
    manifest = RunFolder(child).read()
    assert manifest.lineage is not None and manifest.lineage.parent == str(run.resolve())
    assert manifest.lineage.mix_old == 0.0 and manifest.method.name == "full"
    assert manifest.base_model.content_hash == RunFolder(run).read().base_model.content_hash
    # `tailored eval` on the old data compares the child with its parent (forgetting of the old task shows there)
    report = evaluate(child, data, probe=None, collapse=False, limit=4, max_new_tokens=4, use_cache=False,
                      progress=False, save=False)
    assert report["baseline"] == str(run.resolve()) and set(report["models"]) == {"tuned", "base"}


def test_mix_old_mixes_the_parents_data_and_mismatches_are_refused(parent: tuple[Path, Path], tmp_path: Path,
                                                                   tiny_model_dir: Path) -> None:
    run, _ = parent
    new = write_chat_dataset(tmp_path / "new.jsonl", n=24, seed=5)
    result = tailored.train(from_run=str(run), data=str(new), mix_old=0.5, max_steps=1, batch_size=8, threads=1,
                            red_flags="off", output=str(tmp_path / "mixed"))
    mixed = tmp_path / "mixed" / "data" / "train-mixed.jsonl"
    assert len(mixed.read_text().splitlines()) == 48  # 24 new + 24 old: half of the training set is old
    assert result.manifest.data.train.path == str(mixed.resolve()) and result.manifest.lineage.data == str(new.resolve())
    with pytest.raises(CheckpointError, match="method: full in the parent, lora now"):
        tailored.train(from_run=str(run), data=str(new), method="lora", max_steps=1, threads=1, red_flags="off",
                       output=str(tmp_path / "other-r"))
    with pytest.raises(ConfigError, match="mix_old needs from_run"):
        tailored.train(data=str(new), model=str(tiny_model_dir), mix_old=0.2, max_steps=1, threads=1, red_flags="off",
                       output=str(tmp_path / "no-parent"))
    with pytest.raises(CheckpointError, match="not a run folder"):
        tailored.train(from_run=str(tmp_path), data=str(new), max_steps=1, output=str(tmp_path / "x"))


def test_a_job_on_a_fine_tuned_model_continues_it(parent: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    """OpenAI's way to continue a fine-tune (``model: "ft:..."``) is from_run in the jobs API, within the project."""
    import shutil

    from tailored.errors import RequestError
    from tailored.jobs.requests import parse_create
    from tailored.jobs.service import BaseModelInfo, open_jobs

    jobs = open_jobs(BaseModelInfo("tiny", str(tiny_model_dir)), home=tmp_path / "service")
    shutil.copytree(parent[0], jobs.folder("ftjob-1") / "run")
    body = {"id": "ftjob-1", "status": "succeeded", "fine_tuned_model": "ft:tiny:a::abc", "organization_id": "a",
            "created_at": 1, "finished_at": 2}
    jobs.store.add_job("ftjob-1", "a", body, {"final_step": 24})
    run = jobs._check_model("a", "ft:tiny:a::abc")
    assert run == str(jobs.folder("ftjob-1") / "run")
    with pytest.raises(RequestError, match="not available"):  # another project's model is not there for it
        jobs._check_model("b", "ft:tiny:a::abc")
    settings = jobs._settings(parse_create({"model": "ft:tiny:a::abc", "training_file": "file-x",
                                            "tailored": {"mix_old": 0.2}}), run)
    assert settings["from_run"] == run and settings["method"] == "full" and settings["mix_old"] == 0.2
    with pytest.raises(RequestError, match="from_run"):  # a path on the server is not for a tenant to name
        parse_create({"model": "tiny", "training_file": "file-x", "tailored": {"from_run": "/etc"}})
    jobs.store.close()
