"""Fine-tuning jobs as OpenAI's API describes them: create, list, retrieve, cancel, pause, resume, events, checkpoints.

This is the library behind ``/v1/fine_tuning/jobs``; the routes only parse and shape. A job moves
``validating_files → queued → running → succeeded | failed | cancelled`` (and ``paused``); the
:class:`~tailored.jobs.runner.Runner` moves it and trains it with the same ``tailored train`` as the
command line. Everything is kept in the :class:`~tailored.jobs.store.Store`, per project: another
project's ids answer 404, as if they did not exist.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailored.config.load import load_train_config
from tailored.errors import ConfigError, NotFound, RequestError
from tailored.jobs.files import Files
from tailored.jobs.requests import CreateJob, parse_create
from tailored.jobs.store import Store, new_id, now, page
from tailored.models.registry import sanitise

TERMINAL = ("succeeded", "failed", "cancelled")
TRAINS_ON = {"supervised": "chat", "dpo": "preference"}  # OpenAI's job types and the data each trains on
ACTIVE = ("validating_files", "queued", "running")


@dataclass(frozen=True)
class BaseModelInfo:
    """The base model the server fine-tunes: its public id, what to load, and the other names it answers to."""

    id: str
    spec: str
    aliases: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        return name == self.id or name in self.aliases


def open_jobs(base: BaseModelInfo, home: Path | None = None) -> Jobs:
    """The jobs service whose state lives in ``home`` (default ``$TAILORED_HOME/service``)."""
    from tailored.models.registry import tailored_home

    home = Path(home) if home is not None else tailored_home() / "service"
    store = Store(home / "jobs.sqlite")
    return Jobs(store, Files(store, home / "files"), home / "jobs", base)


class Jobs:
    """The jobs of every project; ``root`` holds one folder per job (its run folder, config and log)."""

    def __init__(self, store: Store, files: Files, root: Path, base: BaseModelInfo) -> None:
        self.store, self.files, self.root, self.base = store, files, Path(root), base
        self.wake = lambda: None  # set by the runner: a new job or request needs its attention

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    # ---- create ----------------------------------------------------------------------------
    def create(self, project: str, body: Any) -> dict[str, Any]:
        request = parse_create(body)
        parent = self._check_model(project, request.model)
        self._check_file(project, request.training_file, "training_file", request.type, minimum=10)
        if request.validation_file:
            self._check_file(project, request.validation_file, "validation_file", request.type, minimum=1)
        settings = self._settings(request, parent)
        hp = request.resolved_hyperparameters()
        job_id, created = new_id("ftjob-", 24), now()
        seed = request.seed if request.seed is not None else random.randint(0, 2**31 - 1)
        hyper = {"n_epochs": hp.n_epochs, "batch_size": hp.batch_size, "learning_rate_multiplier": hp.learning_rate_multiplier}
        method_hp = dict(hyper, **({"beta": hp.beta if hp.beta is not None else "auto"} if hp.beta is not None
                                   or TRAINS_ON[request.type] == "preference" else {}))
        job = {
            "id": job_id, "object": "fine_tuning.job", "created_at": created, "model": request.model,
            "organization_id": project, "status": "validating_files", "training_file": request.training_file,
            "validation_file": request.validation_file, "hyperparameters": hyper,
            "method": {"type": request.type, request.type: {"hyperparameters": method_hp}}, "seed": seed,
            "fine_tuned_model": None, "finished_at": None, "estimated_finish": None, "trained_tokens": None,
            "result_files": [], "error": None, "integrations": [], "metadata": request.metadata,
            "tailored": {"method": settings["method"], **settings["method_options"]},
        }
        state = {"suffix": request.suffix or "", "shortid": new_id("", 8), "settings": settings, "resume": False,
                 "attempts": 0, "cursor": [-1, 1], "pid": None, "requested": None}
        self.store.add_job(job_id, project, job, state)
        self.store.add_event(job_id, f"Created fine-tuning job: {job_id}")
        self.store.add_event(job_id, f"Validating training file: {request.training_file}"
                             + (f" and validation file: {request.validation_file}" if request.validation_file else ""))
        self.wake()
        return job

    def _check_model(self, project: str, model: str) -> str | None:
        """None for the base; for one of the project's fine-tuned models, its run folder (the job continues it)."""
        if self.base.matches(model):
            return None
        if model.startswith("ft:"):
            found = [m for m in self.models() if m["id"] == model and m["project"] == project]
            if found and found[0]["which"] in ("auto", "final"):  # the job's model, or its last checkpoint
                return str(found[0]["run"])
            if found:
                raise RequestError(f"model {model!r} is an intermediate checkpoint; a job continues a final model",
                                   param="model", code="model_not_available", hint="use the job's fine_tuned_model")
        raise RequestError(f"model {model!r} is not available for fine-tuning on this server", param="model",
                           code="model_not_available", hint=f"this server fine-tunes {self.base.id}")

    def _check_file(self, project: str, file_id: str, param: str, kind: str, *, minimum: int) -> None:
        """A file the job can train on: it exists in this project, is a checked fine-tune file, in the right format."""
        try:
            row = self.files.row(project, file_id)
        except NotFound:
            raise RequestError(f"invalid {param}: {file_id} does not exist", param=param, code="invalid_file") from None
        if row["purpose"] != "fine-tune":
            raise RequestError(f"invalid {param}: {file_id} has purpose {row['purpose']!r}, not 'fine-tune'",
                               param=param, code="invalid_file_purpose", hint="upload it with purpose='fine-tune'")
        if row["status"] != "processed":
            raise RequestError(f"invalid {param}: {file_id} failed its checks:\n{row['status_details']}", param=param,
                               code="invalid_file_format", hint="fix the lines named and upload the file again")
        import json

        report = json.loads(row["report"] or "{}")
        n, fmt = report.get("examples", 0), report.get("format")
        if n < minimum:
            raise RequestError(f"{param} {file_id} has {n} examples, minimum is {minimum}", param=param,
                               code="invalid_n_examples")
        if (fmt == "preference") != (TRAINS_ON[kind] == "preference"):
            want = "preference pairs (input, preferred_output, non_preferred_output)" if fmt != "preference" else "chat examples"
            raise RequestError(f"invalid {param}: {file_id} holds {fmt} data; a {kind} job needs {want}", param=param,
                               code="invalid_file_format")

    def _settings(self, request: CreateJob, parent: str | None = None) -> dict[str, Any]:
        """The ``tailored train`` settings of the job's extension field, checked like the CLI checks them.

        The job's type says what the method trains on (supervised: chat examples, dpo: preference pairs);
        without ``tailored.method`` the default method for that data trains it.
        """
        from tailored.methods import method_options
        from tailored.methods.base import default_method, get_method

        extra = dict(request.tailored or {})
        if parent is not None:  # continuing a fine-tune: its method unless another is asked (then refused at training)
            from tailored.config.manifest import RunFolder

            extra.setdefault("method", RunFolder(parent).read().method.name)
        wants = TRAINS_ON[request.type]
        extra.setdefault("method", default_method(wants))
        if extra["method"] in method_options() and get_method(extra["method"]).trains_on != wants:
            raise RequestError(f"tailored.method {extra['method']!r} does not train on {wants} data, which a "
                               f"{request.type} job needs", param="tailored.method", code="invalid_value")
        beta = request.resolved_hyperparameters().beta
        if beta not in (None, "auto"):
            extra["dpo_beta"] = beta
        try:
            cfg = load_train_config({"data": "-", **extra}, methods=method_options())
        except ConfigError as exc:
            raise RequestError("tailored: " + "; ".join(exc.problems), param="tailored", code="invalid_value") from None
        return {"method": cfg.method, "method_options": cfg.method_options, "from_run": parent,
                **{k: v for k, v in extra.items() if k not in cfg.method_options and k != "method"}}

    # ---- read ------------------------------------------------------------------------------
    def get(self, project: str | None, job_id: str) -> dict[str, Any]:
        found = self.store.job(job_id, project)
        if found is None:
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
        return found[0]

    def state(self, job_id: str) -> dict[str, Any]:
        found = self.store.job(job_id)
        assert found is not None
        return found[1]

    def list(self, project: str | None, *, after: str | None = None, limit: int = 20,
             metadata: dict[str, str] | None = None, no_metadata: bool = False) -> dict[str, Any]:
        jobs = self.store.jobs(project)
        if no_metadata:
            jobs = [j for j in jobs if not j.get("metadata")]
        elif metadata:
            jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in metadata.items())]
        return page(jobs, after=after, limit=_limit(limit))

    def events(self, project: str | None, job_id: str, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        self.get(project, job_id)
        return page(self.store.events(job_id), after=after, limit=_limit(limit))

    def checkpoints(self, project: str | None, job_id: str, *, after: str | None = None, limit: int = 10) -> dict[str, Any]:
        self.get(project, job_id)
        return page(self.store.checkpoints(job_id), after=after, limit=_limit(limit))

    # ---- control ---------------------------------------------------------------------------
    def cancel(self, project: str | None, job_id: str) -> dict[str, Any]:
        job = self.get(project, job_id)
        if job["status"] in TERMINAL:
            raise RequestError(f"job {job_id} is {job['status']} already; only an unfinished job can be cancelled",
                               param="fine_tuning_job_id", code="job_not_cancellable")
        if job["status"] == "running":
            self.store.update_job(job_id, state={"requested": "cancel"})  # the runner stops the process, then sets it
            self.wake()
        else:
            self.store.update_job(job_id, {"status": "cancelled", "finished_at": now(), "estimated_finish": None})
            self.store.add_event(job_id, "Fine-tuning job cancelled")
        return self.get(project, job_id)

    def pause(self, project: str | None, job_id: str) -> dict[str, Any]:
        job = self.get(project, job_id)
        if job["status"] not in ACTIVE:
            raise RequestError(f"job {job_id} is {job['status']}; only a queued or running job can be paused",
                               param="fine_tuning_job_id", code="job_not_pausable")
        if job["status"] == "running":
            self.store.update_job(job_id, state={"requested": "pause"})  # the process checkpoints, then stops
            self.wake()
        else:
            self.store.update_job(job_id, {"status": "paused", "estimated_finish": None})
            self.store.add_event(job_id, "Fine-tuning job paused before it started")
        return self.get(project, job_id)

    def resume(self, project: str | None, job_id: str) -> dict[str, Any]:
        job = self.get(project, job_id)
        if job["status"] != "paused":
            raise RequestError(f"job {job_id} is {job['status']}; only a paused job can be resumed",
                               param="fine_tuning_job_id", code="job_not_paused")
        self.store.update_job(job_id, {"status": "queued"}, {"requested": None})
        self.store.add_event(job_id, "Fine-tuning job resumed: queued to continue from its last checkpoint")
        self.wake()
        return self.get(project, job_id)

    # ---- what the server serves ------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Every fine-tuned model and checkpoint of succeeded jobs: id, project, run folder, weights, created.

        The last checkpoint is the final model; the others name their checkpoint folders.
        """
        out = []
        for job in self.store.jobs(None, status=("succeeded",)):
            run, final = self.folder(job["id"]) / "run", self.state(job["id"]).get("final_step")
            out.append({"id": job["fine_tuned_model"], "project": job["organization_id"], "run": run, "which": "auto",
                        "created": job["finished_at"]})  # the best validation step's weights when kept
            for ckpt in self.store.checkpoints(job["id"]):
                step = ckpt["step_number"]
                out.append({"id": ckpt["fine_tuned_model_checkpoint"], "project": job["organization_id"], "run": run,
                            "which": "final" if step == final else f"step-{step:06d}", "created": ckpt["created_at"]})
        return out

    def model_name(self, job: dict[str, Any], state: dict[str, Any]) -> str:
        """``ft:{base}:{org}:{suffix}:{shortid}`` (OpenAI's shape; the suffix may be empty)."""
        return (f"ft:{sanitise(self.base.id)}:{sanitise(job['organization_id'])}:{sanitise(state['suffix'], empty='')}:"
                f"{state['shortid']}")


def _limit(limit: int) -> int:
    if not 1 <= int(limit) <= 10000:
        raise RequestError(f"limit {limit}: expected 1 to 10000", param="limit")
    return int(limit)
