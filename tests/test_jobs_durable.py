"""Nothing is lost: a server killed with ``kill -9`` mid-job, restarted, finishes the job from its checkpoint.

Also: a worker process killed from outside is resumed; a job trains as two ``torchrun`` processes
through the launcher setting; the terminal commands (``tailored jobs``, ``tailored train --provider
openai``) drive a server through the SDK; and a job on the embedded model ends in a callable model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tailored.serve.server import free_port
from tailored.testing.tiny import write_chat_dataset

KEY = "sk-durable"
pytestmark = pytest.mark.slow


class Server:
    """``tailored serve`` as its own process (so that it can be killed with SIGKILL)."""

    def __init__(self, base: Path, home: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = dict(os.environ, TAILORED_HOME=str(home), OMP_NUM_THREADS="1", TAILORED_THREADS="1")
        env.pop("PYTEST_XDIST_WORKER", None)
        self.process = subprocess.Popen([sys.executable, "-m", "tailored.cli.main", "serve", "--base", str(base),
                                         "--port", str(self.port), "--api-key", KEY, *extra], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = openai.OpenAI(base_url=self.url, api_key=KEY, max_retries=0, _strict_response_validation=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.client.models.list()
                return
            except openai.APIConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the server did not start") from None
                time.sleep(0.3)

    def stop(self, sig: int = signal.SIGINT) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=120)


def wait(c: openai.OpenAI, job_id: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} is still {job.status}")


def said(c: openai.OpenAI, job_id: str) -> list[str]:
    return [e.message for e in reversed(list(c.fine_tuning.jobs.list_events(job_id, limit=500)))]


def until_checkpoint(c: openai.OpenAI, job_id: str) -> None:
    deadline = time.monotonic() + 180
    while not c.fine_tuning.jobs.checkpoints.list(job_id).data:
        assert time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.1)


def test_a_server_killed_mid_job_resumes_it_and_loses_no_event(tiny_model_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(tiny_model_dir, home)
    c = server.client
    train = c.files.create(file=write_chat_dataset(tmp_path / "train.jsonl", n=48), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="model", training_file=train.id,  # 2400 steps: long enough to outlive a restart
                                    hyperparameters={"n_epochs": 50, "batch_size": 1})
    until_checkpoint(c, job.id)
    server.stop(signal.SIGKILL)

    server = Server(tiny_model_dir, home)  # same $TAILORED_HOME: the store and the run folders are still there
    try:
        c = server.client
        done = wait(c, job.id)
        assert done.status == "succeeded", done.error
        messages = said(c, job.id)
        assert any("was interrupted (the server was stopped while it trained); it continues from its checkpoint at step"
                   in m for m in messages)
        steps = [m.split(":")[0] for m in messages if "training loss" in m]
        assert steps == [f"Step {i}/2400" for i in range(1, 2401)]  # every step once: none lost, none repeated
        assert len(messages) == len(set(e.id for e in c.fine_tuning.jobs.list_events(job.id, limit=500)))
        answer = c.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=3)
        assert answer.model == done.fine_tuned_model
    finally:
        server.stop()


def test_a_killed_worker_is_resumed_and_torchrun_trains_an_fsdp_job(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = Server(tiny_model_dir, tmp_path / "home", "--jobs-launcher", "torchrun", "--jobs-nproc", "2")
    try:
        c = server.client
        train = c.files.create(file=write_chat_dataset(tmp_path / "train.jsonl", n=24), purpose="fine-tune")
        job = c.fine_tuning.jobs.create(model="model", training_file=train.id, hyperparameters={"n_epochs": 20},
                                        extra_body={"tailored": {"strategy": "fsdp"}})  # the launcher's processes share it
        until_checkpoint(c, job.id)
        found = subprocess.run(["pgrep", "-f", f"{job.id}/config.yaml"], capture_output=True, text=True).stdout.split()
        assert found, "no worker process found"
        os.killpg(os.getpgid(int(found[0])), signal.SIGKILL)  # the whole worker: torchrun and both ranks
        done = wait(c, job.id)
        assert done.status == "succeeded", done.error
        assert any("its training process was killed by signal 9" in m for m in said(c, job.id))
        manifest = json.loads((tmp_path / "home" / "service" / "jobs" / job.id / "run" / "manifest.json").read_text())
        assert manifest["environment"]["processes"] == 2 and manifest["environment"]["strategy"] == "fsdp"
    finally:
        server.stop()


def test_terminal_commands_drive_a_server(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tailored.cli.main import main

    server = Server(tiny_model_dir, tmp_path / "home")
    try:
        data = write_chat_dataset(tmp_path / "train.jsonl", n=24)
        common = ["--url", server.url, "--api-key", KEY]
        code = main(["jobs", "create", "--data", str(data), "--model", "model", "--epochs", "1", "--method", "dora",
                     "--set", "lora_r=4", "--suffix", "cli", "--follow", *common])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "Step 6/6: training loss=" in out and "fine-tuned model: ft:model:default:cli:" in out
        job = server.client.fine_tuning.jobs.list(limit=1).data[0]
        assert job.model_extra["tailored"] == {"method": "dora", "lora_r": 4}
        assert main(["jobs", "list", *common]) == 0 and job.id in capsys.readouterr().out

        code = main(["train", "--provider", "openai", "--base-url", server.url, "--api-key", KEY, "--data", str(data),
                     "--model", "model", "--epochs", "1", "--lora-r", "4"])
        out = capsys.readouterr().out
        assert code == 0 and "The job has successfully completed" in out
        bad = tmp_path / "bad.jsonl"
        bad.write_text("{not json\n")
        assert main(["train", "--provider", "openai", "--base-url", server.url, "--data", str(bad)]) != 0
        assert "line 1" in capsys.readouterr().err  # checked here, before anything is uploaded
        assert main(["jobs", "follow", "ftjob-nope", *common]) != 0
        assert "No such fine-tuning job" in capsys.readouterr().err
    finally:
        server.stop()


def test_a_job_on_the_embedded_model(smollm2_dir: Path, tmp_path: Path) -> None:
    """The acceptance path: SmolLM2-135M from the wheel, ten examples, one epoch, then chat with the result."""
    server = Server(smollm2_dir, tmp_path / "home")  # the converted folder: no second conversion in this home
    try:
        c = server.client
        base = c.models.list().data[0].id
        data = tmp_path / "tickets.jsonl"
        data.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"Ticket {i}: my order #{100 + i} never arrived."},
            {"role": "assistant", "content": '{"category": "shipping", "priority": "high"}'}]}) + "\n" for i in range(10)))
        train = c.files.create(file=data, purpose="fine-tune")
        job = c.fine_tuning.jobs.create(model=base, training_file=train.id, hyperparameters={"n_epochs": 1},
                                        suffix="tickets")
        done = wait(c, job.id, timeout=600)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model.startswith(f"ft:{base}:default:tickets:")
        answer = c.chat.completions.create(model=done.fine_tuned_model, max_tokens=12,
                                           messages=[{"role": "user", "content": "Ticket 99: my order #7 never arrived."}])
        assert answer.model == done.fine_tuned_model and answer.choices[0].message.content
    finally:
        server.stop()
