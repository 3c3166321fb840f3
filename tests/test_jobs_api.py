"""OpenAI's fine-tuning flow against a real server on 127.0.0.1, driven by the official SDK in strict mode.

files → job → events → checkpoints → the fine-tuned model (and each checkpoint) answering chat
completions; pagination to the end of every list; OpenAI-style 4xx errors for bad requests; two
projects that cannot see each other; cancel, pause/resume and a DPO job. Jobs train the tiny model in
worker processes, as they would the embedded one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tailored.serve.server import start
from tailored.testing.tiny import write_chat_dataset

KEYS = {"a": "sk-project-a", "b": "sk-project-b", "admin": "sk-admin"}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, home: None):
    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys.write_text(json.dumps({"keys": [{"key": KEYS["a"], "project": "team-a"}, {"key": KEYS["b"], "project": "team-b"},
                                         {"key": KEYS["admin"], "project": "ops", "admin": True}]}))
    srv = start(base=str(tiny_model_dir), api_keys=str(keys), max_tokens=16)
    yield srv
    srv.stop()


def client(server: Any, who: str = "a", strict: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEYS[who], max_retries=0, _strict_response_validation=strict)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("jobdata")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"input": {"messages": [{"role": "user", "content": f"say {w}"}]},
                                         "preferred_output": [{"role": "assistant", "content": f"{w} {w}"}],
                                         "non_preferred_output": [{"role": "assistant", "content": "no"}]}) + "\n"
                             for w in ("apple", "river", "stone", "cloud", "green", "night", "table", "north",
                                       "light", "sugar", "paper", "music")))
    bad = root / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                   "{not json\n" '{"messages": [{"role": "user", "content": "no answer"}]}\n')
    return {"train": write_chat_dataset(root / "train.jsonl", n=24), "valid": write_chat_dataset(root / "valid.jsonl", n=6, seed=3),
            "long": write_chat_dataset(root / "long.jsonl", n=48, seed=5), "pairs": pairs, "bad": bad,
            "few": write_chat_dataset(root / "few.jsonl", n=6, seed=7)}


def wait(c: openai.OpenAI, job_id: str, until: tuple[str, ...] = ("succeeded", "failed", "cancelled"), timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def messages(c: openai.OpenAI, job_id: str) -> list[str]:
    """Every event message, oldest first, read through the SDK's auto-pagination (3 a page)."""
    return [e.message for e in reversed(list(c.fine_tuning.jobs.list_events(job_id, limit=3)))]


@pytest.fixture(scope="module")
def finished(server: Any, data: dict[str, Path]) -> dict[str, Any]:
    """One job of project A, trained to the end with a validation file."""
    c = client(server)
    train = c.files.create(file=data["train"], purpose="fine-tune")
    valid = c.files.create(file=("valid.jsonl", data["valid"].read_bytes()), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="model", training_file=train.id, validation_file=valid.id, suffix="support",
                                    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
                                    metadata={"team": "a"}, seed=7,
                                    # every step is reported once: early stopping (on with validation) would end the
                                    # tiny model's run at the auto rate (x8) before step 12
                                    extra_body={"tailored": {"lora_r": 4, "early_stopping_patience": 0}})
    assert job.status == "validating_files" and job.hyperparameters.n_epochs == 2 and job.seed == 7
    return {"job": wait(c, job.id), "train": train, "valid": valid}


def test_the_whole_flow_ends_in_a_model_that_answers(server: Any, finished: dict[str, Any], data: dict[str, Path]) -> None:
    c = client(server)
    job = finished["job"]
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:model:team-a:support:{job.fine_tuned_model.rsplit(':', 1)[1]}"
    # resolved: auto multiplies the base rate by (7e9 / parameters) ** 0.5, clamped at 8 for this tiny model
    assert job.hyperparameters.batch_size == 4 and job.hyperparameters.learning_rate_multiplier == 8.0
    assert job.trained_tokens and job.trained_tokens > 0 and job.finished_at >= job.created_at
    assert job.model_extra["tailored"] == {"method": "lora", "lora_r": 4}
    said = messages(c, job.id)
    assert said[0] == f"Created fine-tuning job: {job.id}" and said[-1] == "The job has successfully completed"
    for expected in ("Files validated, moving job to queued state", "Fine-tuning job started",
                     f"New fine-tuned model created: {job.fine_tuned_model}"):
        assert expected in said
    steps = [m for m in said if m.startswith("Step ") and "training loss" in m]
    assert [s.split(":")[0] for s in steps] == [f"Step {i}/12" for i in range(1, 13)]  # each step once, in order
    assert any("validation loss" in m for m in said) and any(m.startswith("Red flags:") for m in said)
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=3))
    assert len({e.id for e in events}) == len(events) == len(said)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)  # newest first

    checkpoints = list(c.fine_tuning.jobs.checkpoints.list(job.id, limit=1))
    assert [cp.step_number for cp in checkpoints] == [12, 6]  # one per epoch, newest first
    assert all(cp.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{cp.step_number}" for cp in checkpoints)
    assert checkpoints[1].metrics.train_loss is not None and checkpoints[1].metrics.valid_loss is not None

    models = {m.id for m in c.models.list()}
    assert {job.fine_tuned_model, *(cp.fine_tuned_model_checkpoint for cp in checkpoints)} <= models
    for model in (job.fine_tuned_model, checkpoints[1].fine_tuned_model_checkpoint):
        answer = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "alpha beta"}], max_tokens=4)
        assert answer.model == model and answer.choices[0].finish_reason in ("stop", "length")

    result = c.files.retrieve(job.result_files[0])
    assert result.purpose == "fine-tune-results" and result.filename == "step_metrics.csv"
    csv = c.files.content(result.id).text.splitlines()
    assert csv[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(csv) == 13
    assert c.files.content(finished["train"].id).content == data["train"].read_bytes()


def test_lists_paginate_to_their_end(server: Any, finished: dict[str, Any], data: dict[str, Path]) -> None:
    c = client(server)
    for _ in range(2):
        c.files.create(file=data["few"], purpose="fine-tune")
    everything = c.files.list().data
    paged = list(c.files.list(limit=1))
    assert [f.id for f in paged] == [f.id for f in everything] and len(paged) >= 5
    assert [f.id for f in c.files.list(order="asc", limit=2)] == [f.id for f in reversed(everything)]
    assert [f.id for f in c.files.list(purpose="fine-tune-results")] == finished["job"].result_files
    jobs = list(c.fine_tuning.jobs.list(limit=1))
    assert finished["job"].id in {j.id for j in jobs} and len({j.id for j in jobs}) == len(jobs)
    assert [j.id for j in c.fine_tuning.jobs.list(metadata={"team": "a"})] == [finished["job"].id]
    assert c.fine_tuning.jobs.list(metadata={"team": "z"}).data == []


def test_bad_requests_get_openai_errors(server: Any, finished: dict[str, Any], data: dict[str, Path]) -> None:
    c = client(server)
    train = finished["train"].id

    def refused(status: int, param: str | None, **body: Any) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as err:
            c.fine_tuning.jobs.create(**{"model": "model", "training_file": train, **body})
        assert err.value.status_code == status and err.value.param == param, err.value.message
        return err.value

    refused(400, "training_file", training_file="file-doesnotexist")
    assert "not available for fine-tuning" in refused(400, "model", model="gpt-4o-mini").message
    refused(400, "hyperparameters.n_epochs", hyperparameters={"n_epochs": 0})
    refused(400, "method.supervised.hyperparameters.learning_rate_multiplier",
            method={"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": -1}}})
    assert "reinforcement" in refused(400, "method.type", method={"type": "reinforcement"}).message
    assert "integrations" in refused(400, "integrations", integrations=[{"type": "wandb", "wandb": {"project": "p"}}]).message
    assert "frobnicate" in refused(400, "frobnicate", extra_body={"frobnicate": 1}).message
    assert "lorra" in refused(400, "tailored", extra_body={"tailored": {"method": "lorra"}}).message
    refused(400, "tailored.output", extra_body={"tailored": {"output": "/etc"}})
    few = c.files.create(file=data["few"], purpose="fine-tune")
    assert refused(400, "training_file", training_file=few.id).code == "invalid_n_examples"
    assert refused(400, "training_file", method={"type": "dpo"}).code == "invalid_file_format"  # chat data, dpo job
    other = c.files.create(file=data["few"], purpose="user_data")
    assert refused(400, "training_file", training_file=other.id).code == "invalid_file_purpose"

    bad = c.files.create(file=data["bad"], purpose="fine-tune")
    assert bad.status == "error" and "line 2" in (bad.status_details or "") and "line 3" in bad.status_details
    assert refused(400, "training_file", training_file=bad.id).code == "invalid_file_format"
    with pytest.raises(openai.BadRequestError) as err:
        c.files.create(file=data["few"], purpose="evals-ish")
    assert err.value.param == "purpose"

    for call in (lambda: c.fine_tuning.jobs.retrieve("../../etc/passwd"), lambda: c.files.retrieve("../jobs.sqlite"),
                 lambda: c.files.content("..%2F..%2Fjobs.sqlite"), lambda: c.fine_tuning.jobs.list_events("ftjob-nope")):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError):  # a finished job cannot be cancelled (400, not a retried 409)
        c.fine_tuning.jobs.cancel(finished["job"].id)
    raw = httpx.post(f"{server.url}/fine_tuning/jobs", content=b"{oops", headers={"authorization": f"Bearer {KEYS['a']}"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"


def test_two_projects_cannot_see_each_other(server: Any, finished: dict[str, Any]) -> None:
    job, train = finished["job"], finished["train"]
    b, admin = client(server, "b"), client(server, "admin")
    for call in (lambda: b.files.retrieve(train.id), lambda: b.files.content(train.id), lambda: b.files.delete(train.id),
                 lambda: b.fine_tuning.jobs.retrieve(job.id), lambda: b.fine_tuning.jobs.list_events(job.id),
                 lambda: b.fine_tuning.jobs.checkpoints.list(job.id), lambda: b.fine_tuning.jobs.cancel(job.id),
                 lambda: b.models.retrieve(job.fine_tuned_model),
                 lambda: b.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "x"}])):
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.files.list().data == [] and b.fine_tuning.jobs.list().data == []
    assert job.fine_tuned_model not in {m.id for m in b.models.list()}
    with pytest.raises(openai.BadRequestError):  # project B cannot train on A's file either
        b.fine_tuning.jobs.create(model="model", training_file=train.id)
    assert admin.fine_tuning.jobs.retrieve(job.id).id == job.id and job.fine_tuned_model in {m.id for m in admin.models.list()}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0).files.list()


def test_cancel_a_running_job(server: Any, data: dict[str, Path]) -> None:
    c = client(server)
    train = c.files.create(file=data["long"], purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="model", training_file=train.id, hyperparameters={"n_epochs": 50})
    wait(c, job.id, until=("running",))
    deadline = time.monotonic() + 60
    while not any("training loss" in m for m in messages(c, job.id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    running = c.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.estimated_finish and running.estimated_finish >= running.created_at
    c.fine_tuning.jobs.cancel(job.id)
    done = wait(c, job.id)
    assert done.status == "cancelled" and done.fine_tuned_model is None and done.finished_at
    assert messages(c, job.id)[-1] == "Fine-tuning job cancelled"
    assert done.fine_tuned_model not in {m.id for m in c.models.list()}


def test_pause_and_resume_continue_from_the_checkpoint(server: Any, data: dict[str, Path]) -> None:
    c, loose = client(server), client(server, strict=False)  # "paused" is not in the SDK's status enum
    train = c.files.create(file=data["train"], purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="model", training_file=train.id, hyperparameters={"n_epochs": 30})
    deadline = time.monotonic() + 120
    while not c.fine_tuning.jobs.checkpoints.list(job.id).data and time.monotonic() < deadline:
        time.sleep(0.2)
    loose.fine_tuning.jobs.pause(job.id)
    paused = wait(loose, job.id, until=("paused", "succeeded"))
    assert paused.status == "paused", "the job finished before it could be paused: give it more epochs"
    loose.fine_tuning.jobs.resume(job.id)
    done = wait(c, job.id)
    assert done.status == "succeeded", done.error
    said = messages(c, job.id)
    assert any(m.startswith("Fine-tuning job paused at its checkpoint at step") for m in said)
    assert any(m.startswith("Training resumed from its checkpoint at step") for m in said)
    steps = [m.split(":")[0] for m in said if "training loss" in m]
    assert steps == [f"Step {i}/180" for i in range(1, 181)]  # nothing lost, nothing repeated


def test_a_dpo_job(server: Any, data: dict[str, Path]) -> None:
    c = client(server)
    pairs = c.files.create(file=data["pairs"], purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="model", training_file=pairs.id,
                                    method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}})
    done = wait(c, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.2
    assert done.model_extra["tailored"]["method"] == "dpo"
    answer = c.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "say apple"}],
                                       max_tokens=3)
    assert answer.model == done.fine_tuned_model


def test_a_job_that_cannot_train_fails_with_a_clear_error(server: Any, data: dict[str, Path]) -> None:
    c = client(server)
    train = c.files.create(file=data["train"], purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="model", training_file=train.id,  # every example is longer than 8 tokens
                                    extra_body={"tailored": {"max_seq_length": 8, "overlength": "error"}})
    done = wait(c, job.id)
    assert done.status == "failed" and done.fine_tuned_model is None and done.finished_at
    assert done.error.code and "max_seq_length" in done.error.message, done.error
    assert messages(c, job.id)[-1].startswith("Fine-tuning job failed: ")
