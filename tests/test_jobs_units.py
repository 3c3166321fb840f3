"""The jobs service's parts without a server: pages, the request checks, launchers, the follower, the runner lock."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from tailored.config.manifest import RunFolder
from tailored.errors import ConfigError, RequestError
from tailored.jobs.launch import Launcher
from tailored.jobs.progress import Follower, results_csv
from tailored.jobs.requests import parse_create
from tailored.jobs.runner import Runner
from tailored.jobs.service import BaseModelInfo, open_jobs
from tailored.jobs.store import Store, page


def test_pages_move_forward_and_end() -> None:
    items = [{"id": f"x{i}"} for i in range(5)]
    first = page(items, after=None, limit=2)
    assert [i["id"] for i in first["data"]] == ["x0", "x1"] and first["has_more"] and first["last_id"] == "x1"
    last = page(items, after="x3", limit=2)
    assert [i["id"] for i in last["data"]] == ["x4"] and not last["has_more"]
    assert page(items, after="x4", limit=2)["data"] == [] and page(items, after="nope", limit=2)["data"] == []


def test_events_with_a_key_are_recorded_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "jobs.sqlite")
    for _ in range(3):
        store.add_event("ftjob-1", "Step 1/2: training loss=1.0", type="metrics", key="train:1")
    store.add_event("ftjob-1", "a message")
    store.add_event("ftjob-1", "a message")
    assert [e["message"] for e in store.events("ftjob-1")] == ["a message", "a message", "Step 1/2: training loss=1.0"]


@pytest.mark.parametrize("body, param", [
    ({"training_file": "f"}, "model"),
    ({"model": "m", "training_file": "f", "hyperparameters": {"batch_size": 512}}, "hyperparameters.batch_size"),
    ({"model": "m", "training_file": "f", "suffix": "x" * 65}, "suffix"),
    ({"model": "m", "training_file": "f", "seed": -1}, "seed"),
    ({"model": "m", "training_file": "f", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ({"model": "m", "training_file": "f", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}},
     "method.dpo.hyperparameters.beta"),
    ({"model": "m", "training_file": "f", "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
      "hyperparameters": {"n_epochs": 2}}, "hyperparameters"),
    ({"model": "m", "training_file": "f", "hyperparameters": {"beta": 0.1}}, "method.supervised.hyperparameters.beta"),
    ({"model": "m", "training_file": "f", "method": {"type": "supervised", "dpo": {}}}, "method.dpo"),
    ({"model": "m", "training_file": "f", "tailored": {"strategy": "fsdp", "nproc": 8}}, "tailored.nproc"),  # the launcher's
])
def test_create_job_requests_are_refused_by_field(body: dict, param: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_create(body)
    assert err.value.param == param, err.value.message


def test_legacy_hyperparameters_count_as_the_methods() -> None:
    request = parse_create({"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 3}})
    assert request.type == "supervised" and request.resolved_hyperparameters().n_epochs == 3


def test_launchers_run_the_same_train_command(tmp_path: Path) -> None:
    config, run = tmp_path / "config.yaml", tmp_path / "run"
    cmd, shell = Launcher().command(config, resume=False, output=run)
    assert cmd == [sys.executable, "-m", "tailored.cli.main", "train", "--config", str(config)] and not shell
    cmd, _ = Launcher("torchrun", 2).command(config, resume=True, output=run)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[-3:] == ["--resume", "--output", str(run)]
    cmd, shell = Launcher("command", template="srun --ntasks=1 {command}").command(config, resume=False, output=run)
    assert shell and shlex.split(cmd)[:2] == ["srun", "--ntasks=1"] and shlex.split(cmd)[-2:] == ["--config", str(config)]
    with pytest.raises(ConfigError, match="--jobs-command"):
        Launcher("command")


def test_the_follower_reports_each_line_once_and_writes_openais_csv(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    lines = [{"step": 0, "split": "validation", "loss": 2.0, "token_accuracy": 0.1},
             {"step": 1, "split": "train", "loss": 1.5, "token_accuracy": 0.2, "elapsed_s": 1.0},
             {"step": 2, "split": "train", "loss": 1.2, "token_accuracy": 0.3, "elapsed_s": 2.0},
             {"step": 2, "split": "validation", "loss": 1.4, "token_accuracy": 0.25}]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in lines[:2]) + '{"step": 2, "spl')  # a line being written
    follower = Follower(run)
    assert [e["key"] for e in follower.new_events()] == ["validation:0", "train:1"]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [e["key"] for e in follower.new_events()] == ["train:2", "validation:2"]
    assert list(follower.new_events()) == []
    again = Follower(run, cursor=(1, 0))  # a restarted runner, from the stored cursor
    assert [e["key"] for e in again.new_events()] == ["train:2", "validation:2"]
    assert again.metrics_at(2) == {"step": 2, "train_loss": 1.2, "train_mean_token_accuracy": 0.3, "valid_loss": 1.4,
                                   "valid_mean_token_accuracy": 0.25, "full_valid_loss": 1.4,
                                   "full_valid_mean_token_accuracy": 0.25}
    assert results_csv(run).splitlines() == ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy",
                                             "1,1.5,0.2,,", "2,1.2,0.3,1.4,0.25"]


def test_one_runner_per_home(tmp_path: Path) -> None:
    base = BaseModelInfo("model", str(tmp_path / "model"))
    first, second = Runner(open_jobs(base, tmp_path)), Runner(open_jobs(base, tmp_path))
    try:
        assert first.start() is True
        assert second.start() is False  # it serves the same store; the first one trains
    finally:
        first.stop()
    third = Runner(open_jobs(base, tmp_path))
    assert third.start() is True
    third.stop()
