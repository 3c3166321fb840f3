"""The run folder's one owner: a typed manifest, checked on read, written atomically.

A run folder written by the previous release still loads (its manifest is kept in
``tests/data/manifest-v1-lora.json``); another manifest version or a damaged file is refused with a
CheckpointError naming the file, never a JSONDecodeError traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tailored
from tailored.config.manifest import MANIFEST_VERSION, Manifest, RunFolder
from tailored.errors import CheckpointError

OLD_MANIFEST = Path(__file__).parent / "data" / "manifest-v1-lora.json"


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    from tailored.testing.tiny import write_chat_dataset

    root = tmp_path_factory.mktemp("runfolder")
    data = write_chat_dataset(root / "train.jsonl", n=12)
    result = tailored.train(data=str(data), model=str(tiny_model_dir), max_steps=2, lora_r=4,
                            output=str(root / "run"), red_flags="off", threads=1)
    return RunFolder(result.run_dir)


def _old_run(run: RunFolder, tiny_model_dir: Path, tmp_path: Path) -> RunFolder:
    """A copy of ``run`` whose manifest is the one the previous release wrote (paths pointed here)."""
    old = RunFolder(tmp_path / "old-run")
    shutil.copytree(run.path, old.path)
    text = (OLD_MANIFEST.read_text().replace("{MODEL}", str(tiny_model_dir)).replace("{RUN}", str(old.path))
            .replace("{ROOT}", str(tmp_path)))
    old.manifest_file.write_text(text)
    return old


def test_a_run_folder_of_the_previous_release_still_loads(run: RunFolder, tiny_model_dir: Path, tmp_path: Path) -> None:
    from tailored.methods.runs import load_run
    from tailored.serve.registry import Registry

    old = _old_run(run, tiny_model_dir, tmp_path)
    manifest = old.read()
    assert manifest.method.name == "lora" and manifest.method.options["lora_r"] == 4
    assert manifest.red_flags == {"level": "curves", "verdict": "ok", "overfitting": "ok", "forgetting": "skipped",
                                  "mode_collapse": "skipped"}
    model, tokenizer, loaded = load_run(old.path)
    assert tokenizer.chat_template == manifest.chat_template and loaded == manifest
    registry = Registry(tiny_model_dir, "tiny", "not-the-hash", [old.path])
    assert [e.kind for e in registry.models()] == ["base", "adapter"]  # same base by path: served as a shared LoRA


def test_the_manifest_round_trips_and_updates_atomically(run: RunFolder) -> None:
    manifest = run.read()
    assert isinstance(manifest, Manifest) and manifest.tailored_manifest == MANIFEST_VERSION
    assert manifest.status == "completed" and manifest.metrics is not None and manifest.metrics.steps == 2
    assert json.loads(run.manifest_file.read_text()) == manifest.model_dump(mode="json")
    updated = run.update(red_flags={"level": "curves", "verdict": "ok"})
    assert run.read() == updated and updated.red_flags == {"level": "curves", "verdict": "ok"}
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]  # no temporary files left behind


@pytest.mark.parametrize("content, says", [
    ("{not json", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"tailored_manifest": ' + "1" * 5000 + "}", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"tailored_manifest": 2}', "manifest version 2; this Tailored reads version 1"),
    ('{"status": "completed"}', "manifest version None"),
    ('{"tailored_manifest": 1, "status": "completed"}', "base_model"),
])
def test_bad_manifests_are_refused_by_name(tmp_path: Path, content: str, says: str) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.manifest_file.write_text(content)
    with pytest.raises(CheckpointError) as err:
        folder.read()
    assert str(folder.manifest_file) in err.value.message and says in err.value.message


def test_a_newer_manifest_says_to_upgrade(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.manifest_file.write_text('{"tailored_manifest": 7}')
    with pytest.raises(CheckpointError) as err:
        folder.read()
    assert "upgrade" in (err.value.hint or "")


def test_chat_on_a_damaged_run_is_a_clear_error(run: RunFolder, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tailored.cli.main import main

    broken = tmp_path / "broken"
    shutil.copytree(run.path, broken)
    (broken / "manifest.json").write_text('{"tailored_manifest": 1, "status": ')
    code = main(["chat", str(broken), "--prompt", "hi"])
    err = capsys.readouterr().err
    assert code != 0 and "manifest.json is damaged" in err and "Traceback" not in err


def test_weights_name_final_best_and_checkpoints(run: RunFolder) -> None:
    assert run.weights("final") == run.final
    with pytest.raises(CheckpointError, match="does not exist"):
        run.weights("step-999999")
