"""The runner: moves jobs through their states and trains them in worker processes, apart from the web process.

One thread, started by the server, does everything in a loop: it validates new jobs' files with the
base model's tokenizer, starts queued jobs while fewer than ``concurrency`` run (each as its own
``tailored train`` process, see :mod:`tailored.jobs.launch`), and follows each running job through
its run folder: ``metrics.jsonl`` becomes metrics events, ``checkpoints/`` becomes checkpoint
objects, and the exit decides the outcome. Its cursor (the last step reported) is in the store, so
after a restart no event is lost or repeated. A job that was running when the server (or its
worker) was killed is resumed from its last checkpoint, and its events say so.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tailored.config.manifest import RunFolder
from tailored.jobs.launch import Launcher
from tailored.jobs.progress import Follower, results_csv
from tailored.jobs.service import Jobs
from tailored.jobs.store import now

log = logging.getLogger("tailored.jobs")
MAX_ATTEMPTS = 3  # a worker killed from outside is resumed this many times before the job fails


@dataclass
class Attempt:
    """One running training process of a job."""

    job_id: str
    process: subprocess.Popen
    follower: Follower
    log_file: Any
    started: float = field(default_factory=time.time)


class Runner:
    """Runs ``jobs``; ``concurrency`` jobs train at once (1 on a CPU: two would share its cores)."""

    def __init__(self, jobs: Jobs, *, concurrency: int = 1, launcher: Launcher | None = None, poll_s: float = 0.5,
                 base_tokenizer: Any = None) -> None:
        self.jobs, self.store = jobs, jobs.store
        self.concurrency, self.launcher, self.poll_s = concurrency, launcher or Launcher(), poll_s
        self.base_tokenizer = base_tokenizer
        self.running: dict[str, Attempt] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tailored-jobs", daemon=True)
        jobs.wake = self._wake.set

    def start(self) -> bool:
        """Take this home's runner lock, resume what the last runner left, and start; False when another holds it.

        One runner per ``$TAILORED_HOME``: a second server on the same home serves the same jobs (they
        are in the same store) while the first one trains them.
        """
        import fcntl

        self._lock_file = open(self.store.path.with_suffix(".runner.lock"), "a")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("another server runs the jobs of %s; this one serves them only", self.store.path.parent)
            self._lock_file.close()
            return False
        self.recover()
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop following; running jobs are checkpointed and resumed when a server starts again."""
        self._stop.set()
        self._wake.set()
        if not self._thread.is_alive():
            return
        self._thread.join(timeout=30)
        for attempt in list(self.running.values()):
            self._signal(attempt, signal.SIGINT)  # finish the step, checkpoint
        for attempt in list(self.running.values()):
            try:
                attempt.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._signal(attempt, signal.SIGKILL)
            self._requeue(attempt.job_id, "the server stopped")
            attempt.log_file.close()
        self.running.clear()
        self._lock_file.close()  # releases the lock

    # ---- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one bad job must not stop the others
                log.exception("jobs runner")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def tick(self) -> None:
        for job_id in self.store.job_ids(status=("validating_files",)):
            self._validate(job_id)
        for attempt in list(self.running.values()):
            self._follow(attempt)
        for job_id in self.store.job_ids(status=("queued",)):
            if len(self.running) >= self.concurrency:
                break
            self._launch(job_id)

    def recover(self) -> None:
        """Jobs the last server left running (it was killed): stop any stray process, resume from the checkpoint."""
        for job_id in self.store.job_ids(status=("running",)):
            pid = self.jobs.state(job_id).get("pid")
            if pid and _is_ours(pid, job_id):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            run = RunFolder(self.jobs.folder(job_id) / "run")
            if run.exists() and run.read().status == "completed":  # it finished while no server watched
                self.store.add_event(job_id, "The server was stopped while the job trained; training finished meanwhile",
                                     level="warn")
                follower = Follower(run, tuple(self.jobs.state(job_id)["cursor"]))
                for event in follower.new_events():
                    self.store.add_event(job_id, event["message"], type="metrics", data=event["data"], key=event["key"])
                self._succeed(job_id, run)
            else:
                self._requeue(job_id, "the server was stopped while it trained")

    def _requeue(self, job_id: str, why: str) -> None:
        run = RunFolder(self.jobs.folder(job_id) / "run")
        step = _newest_checkpoint(run)
        self.store.update_job(job_id, {"status": "queued", "estimated_finish": None}, {"resume": step is not None, "pid": None})
        where = f"from its checkpoint at step {step}" if step is not None else "from the start (no checkpoint yet)"
        self.store.add_event(job_id, f"The job was interrupted ({why}); it continues {where}", level="warn")

    # ---- validating ------------------------------------------------------------------------
    def _validate(self, job_id: str) -> None:
        from tailored.data.check import check_file

        job = self.jobs.get(None, job_id)
        settings = self.jobs.state(job_id)["settings"]
        max_len = int(settings.get("max_seq_length", 1024))
        for param in ("training_file", "validation_file"):
            if not job[param]:
                continue
            path = self.jobs.files.content(None, job[param])
            report = check_file(path, tokenizer=self.base_tokenizer, max_seq_length=max_len, min_examples=1)
            if report.has_errors:
                details = report.render(limit=10).replace(str(path), job[param])
                return self._fail(job_id, "invalid_" + param, f"The {param.replace('_', ' ')} has problems:\n{details}", param)
        self.store.update_job(job_id, {"status": "queued"})
        self.store.add_event(job_id, "Files validated, moving job to queued state")

    # ---- starting --------------------------------------------------------------------------
    def _launch(self, job_id: str) -> None:
        job, state = self.jobs.get(None, job_id), self.jobs.state(job_id)
        folder = self.jobs.folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        run = folder / "run"
        resume = bool(state.get("resume")) and _newest_checkpoint(RunFolder(run)) is not None
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump(self._train_settings(job, state, run), sort_keys=False))
        if not resume and run.exists():  # an earlier attempt died before its first checkpoint
            import shutil

            shutil.rmtree(run)
        command, shell = self.launcher.command(config, resume=resume, output=run)
        log_file = open(folder / "train.log", "a", encoding="utf-8")  # noqa: SIM115 - closed when the attempt ends
        env = dict(os.environ, PYTHONUNBUFFERED="1", TAILORED_JOB_ID=job_id)
        env.pop("PYTEST_XDIST_WORKER", None)
        process = subprocess.Popen(command, shell=shell, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # its own group, signalled as one
        self.running[job_id] = Attempt(job_id, process, Follower(RunFolder(run), tuple(state["cursor"])), log_file)
        first = job["status"] != "running" and not resume
        self.store.update_job(job_id, {"status": "running"}, {"pid": process.pid, "attempts": state["attempts"] + 1,
                                                             "resume": False, "requested": None})
        if first:
            self.store.add_event(job_id, "Fine-tuning job started")
        elif resume:
            self.store.add_event(job_id, f"Training resumed from its checkpoint at step {_newest_checkpoint(RunFolder(run))}")

    def _train_settings(self, job: dict[str, Any], state: dict[str, Any], run: Path) -> dict[str, Any]:
        """The job as ``tailored train`` settings (YAML): OpenAI's fields mapped to Tailored's names."""
        hp = job["method"][job["method"]["type"]]["hyperparameters"]
        settings = {k: v for k, v in state["settings"].items() if k != "method_options"}
        settings.update(state["settings"]["method_options"])
        settings.update(
            data=str(self.jobs.files.content(None, job["training_file"])),
            validation=(str(self.jobs.files.content(None, job["validation_file"])) if job["validation_file"]
                        else settings.get("validation")),  # without a file: auto (the default) or none
            model=self.jobs.base.spec, output=str(run), seed=job["seed"], epochs=hp["n_epochs"],
            batch_size=hp["batch_size"], learning_rate_multiplier=hp["learning_rate_multiplier"],
            save_every="epoch", keep_checkpoints=2)  # with the final weights: the last 3 epochs, as OpenAI keeps
        return {k: v for k, v in settings.items() if v is not None}

    # ---- following -------------------------------------------------------------------------
    def _follow(self, attempt: Attempt) -> None:
        job_id = attempt.job_id
        state = self.jobs.state(job_id)
        if state.get("requested") in ("cancel", "pause") and not state.get("signalled"):
            sig = signal.SIGKILL if state["requested"] == "cancel" else signal.SIGINT  # SIGINT: finish the step, checkpoint
            self._signal(attempt, sig)
            self.store.update_job(job_id, state={"signalled": True})
        self._report(attempt)
        code = attempt.process.poll()
        if code is None:
            return
        self._report(attempt)  # what was written before it exited
        attempt.log_file.close()
        del self.running[job_id]
        self.store.update_job(job_id, state={"signalled": False, "pid": None})
        self._finish(attempt, code, state.get("requested"))

    def _report(self, attempt: Attempt) -> None:
        """New metrics lines → events; new checkpoints → checkpoint objects; ETA and resolved hyperparameters."""
        job = self.jobs.get(None, attempt.job_id)
        follower = attempt.follower
        name = self.jobs.model_name(job, self.jobs.state(attempt.job_id))
        for event in follower.new_events():
            self.store.add_event(attempt.job_id, event["message"], type="metrics", data=event["data"],
                                 key=event["key"])
            step = event["data"]["step"]
            if "train_loss" in event["data"] and (follower.run.checkpoints / f"step-{step:06d}").is_dir():
                self._checkpoint(attempt.job_id, step, name, follower)  # right after its step, in the events too
        for step, _ in follower.checkpoints():
            self._checkpoint(attempt.job_id, step, name, follower)
        update: dict[str, Any] = {}
        if follower.hyperparameters and "auto" in job["hyperparameters"].values():
            update.update(self._resolved(job, follower.hyperparameters))
        if follower.eta is not None:
            update["estimated_finish"] = int(now() + follower.eta)
        if update or list(follower.cursor) != self.jobs.state(attempt.job_id)["cursor"]:
            self.store.update_job(attempt.job_id, update, {"cursor": list(follower.cursor)})
        gone = [c["step_number"] for c in self.store.checkpoints(attempt.job_id)
                if not (follower.run.checkpoints / f"step-{c['step_number']:06d}").is_dir()]
        self.store.remove_checkpoints(attempt.job_id, gone)  # pruned by keep_checkpoints

    def _checkpoint(self, job_id: str, step: int, name: str, follower: Follower) -> None:
        model = f"{name}:ckpt-step-{step}"
        if self.store.add_checkpoint(job_id, step, model, follower.metrics_at(step)):
            self.store.add_event(job_id, f"Checkpoint created at step {step}: {model}", data={"step": step})

    @staticmethod
    def _resolved(job: dict[str, Any], hp: dict[str, Any]) -> dict[str, Any]:
        """The job's hyperparameters with "auto" replaced by the numbers training resolved (as OpenAI does)."""
        numbers = {"n_epochs": hp["epochs"], "batch_size": hp["batch_size"],
                   "learning_rate_multiplier": hp["learning_rate_multiplier"]}
        kind = job["method"]["type"]
        method_hp = dict(job["method"][kind]["hyperparameters"], **numbers)
        if kind == "dpo" and method_hp.get("beta") == "auto":
            method_hp["beta"] = 0.1  # the dpo method's default dpo_beta
        return {"hyperparameters": numbers, "method": {"type": kind, kind: {"hyperparameters": method_hp}}}

    # ---- endings ---------------------------------------------------------------------------
    def _finish(self, attempt: Attempt, code: int, requested: str | None) -> None:
        job_id = attempt.job_id
        run = attempt.follower.run
        manifest = run.read() if run.exists() else None
        if requested == "cancel":
            self.store.update_job(job_id, {"status": "cancelled", "finished_at": now(), "estimated_finish": None})
            self.store.add_event(job_id, "Fine-tuning job cancelled")
        elif requested == "pause":
            step = _newest_checkpoint(run)
            self.store.update_job(job_id, {"status": "paused", "estimated_finish": None}, {"resume": True, "requested": None})
            self.store.add_event(job_id, "Fine-tuning job paused" + (f" at its checkpoint at step {step}" if step else ""))
        elif code == 0 and manifest is not None and manifest.status == "completed":
            self._succeed(job_id, run)
        elif code < 0 and self.jobs.state(job_id)["attempts"] < MAX_ATTEMPTS:  # killed from outside: try again
            self._requeue(job_id, f"its training process was killed by signal {-code}")
        else:
            self._fail(job_id, "training_failed", _error_line(self.jobs.folder(job_id) / "train.log", code), None)

    def _succeed(self, job_id: str, run: RunFolder) -> None:
        job, state = self.jobs.get(None, job_id), self.jobs.state(job_id)
        manifest = run.read()
        name = self.jobs.model_name(job, state)
        final_step = manifest.metrics.steps if manifest.metrics else 0
        follower = Follower(run, (-1, 1))
        list(follower.new_events())
        self.store.add_checkpoint(job_id, final_step, f"{name}:ckpt-step-{final_step}", follower.metrics_at(final_step))
        results = self.jobs.files.add(job["organization_id"], "step_metrics.csv", "fine-tune-results",
                                      results_csv(run).encode())
        update = self._resolved(job, manifest.hyperparameters)
        update.update(status="succeeded", fine_tuned_model=name, finished_at=now(), estimated_finish=None,
                      trained_tokens=manifest.metrics.real_tokens if manifest.metrics else None,
                      result_files=[results["id"]])
        self.store.update_job(job_id, update, {"final_step": final_step})
        flags = manifest.red_flags or {}
        if flags:
            checks = {k: v for k, v in flags.items() if k not in ("level", "verdict", "to_complete")}
            detail = ", ".join(f"{k} {v}" for k, v in checks.items())
            verdict = flags.get("verdict") if any(v != "skipped" for v in checks.values()) else "not checked"
            if flags.get("to_complete"):  # never "ok" while a check was skipped: say what completes it
                detail += f"; {flags['to_complete']}"
            self.store.add_event(job_id, f"Red flags: {verdict} ({detail}); the run report has the evidence and fixes",
                                 level="warn" if verdict in ("warning", "red") else "info", data={"red_flags": flags})
        self.store.add_event(job_id, f"New fine-tuned model created: {name}")
        self.store.add_event(job_id, "The job has successfully completed")

    def _fail(self, job_id: str, code: str, message: str, param: str | None) -> None:
        self.store.update_job(job_id, {"status": "failed", "finished_at": now(), "estimated_finish": None,
                                       "error": {"code": code, "message": message, "param": param}})
        self.store.add_event(job_id, f"Fine-tuning job failed: {message}", level="error")

    @staticmethod
    def _signal(attempt: Attempt, sig: int) -> None:
        try:
            os.killpg(attempt.process.pid, sig)
        except ProcessLookupError:
            pass


def _newest_checkpoint(run: RunFolder) -> int | None:
    from tailored.train.checkpoint import list_checkpoints

    found = list_checkpoints(run.path) if run.path.is_dir() else []
    return int(found[-1].name.split("-")[1]) if found else None


def _is_ours(pid: int, job_id: str) -> bool:
    """Whether ``pid`` is this job's training process (its command names the job's folder): never signal a recycled pid."""
    try:
        return job_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _error_line(log_path: Path, code: int) -> str:
    """The training command's own error message (its ``error:``/``hint:`` lines), else the end of its log."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.is_file() else []
    picked = [line for line in lines if line.startswith(("error:", "hint:"))]
    text = " ".join(picked) if picked else " ".join(lines[-3:])
    return (text or f"the training process exited with code {code}")[:2000] + f" (log: {log_path})"

