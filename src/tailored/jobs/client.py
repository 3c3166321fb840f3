"""The managed route, as a client: upload, create a job and follow it through the official ``openai`` SDK.

Used by ``tailored jobs`` and ``tailored train --provider openai``; it talks to any OpenAI-compatible
fine-tuning service (a ``tailored serve`` or another), so the same commands drive a local server and
a hosted one. Tailored's own settings (a method other than LoRA, its options) travel in the job's
``tailored`` extension field, which other services would refuse.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tailored.errors import TailoredError

DEFAULT_URL = "http://127.0.0.1:8000/v1"
TERMINAL = ("succeeded", "failed", "cancelled")
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}


def connect(url: str | None = None, api_key: str | None = None) -> Any:
    """An ``openai.OpenAI`` client for ``url`` (default ``$TAILORED_URL``, else a local server)."""
    try:
        from openai import OpenAI
    except ImportError as exc:  # pragma: no cover - the serve extra installs it
        raise TailoredError("the managed route needs the openai package", hint="pip install 'tailored[serve]'") from exc
    key = api_key or os.environ.get("TAILORED_API_KEY") or os.environ.get("OPENAI_API_KEY") or "local"
    return OpenAI(base_url=url or os.environ.get("TAILORED_URL") or DEFAULT_URL, api_key=key, max_retries=2)


def job_request(*, model: str, training_file: str, validation_file: str | None = None, method: str = "lora",
                epochs: int | str = "auto", batch_size: int | str = "auto", learning_rate_multiplier: float | str = "auto",
                suffix: str | None = None, seed: int | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The create-job body for Tailored's names: a method that trains on preference pairs makes a dpo job.

    The method travels in the ``tailored`` extension only when it is not the default for its data, so a
    plain LoRA or DPO job is exactly what OpenAI's own service accepts.
    """
    from tailored.methods.base import default_method, get_method

    trains_on = get_method(method).trains_on
    kind = "dpo" if trains_on == "preference" else "supervised"
    hp: dict[str, Any] = {"n_epochs": epochs, "batch_size": batch_size, "learning_rate_multiplier": learning_rate_multiplier}
    extension = dict(settings or {})
    if "dpo_beta" in extension:
        hp["beta"] = extension.pop("dpo_beta")
    if method != default_method(trains_on):
        extension["method"] = method
    body: dict[str, Any] = {"model": model, "training_file": training_file, "method": {"type": kind, kind: {"hyperparameters": hp}}}
    if validation_file:
        body["validation_file"] = validation_file
    if suffix:
        body["suffix"] = suffix
    if seed is not None:
        body["seed"] = seed
    if extension:
        body["tailored"] = extension
    return body


def upload(client: Any, path: str | Path) -> Any:
    """Upload a fine-tune file and wait until the service has checked it (raises with its report on errors)."""
    if not Path(path).is_file():
        raise TailoredError(f"{path}: no such file", hint="pass the path of a JSONL file")
    with open(path, "rb") as f:
        uploaded = client.files.create(file=(Path(path).name, f), purpose="fine-tune")
    deadline = time.monotonic() + 600
    while uploaded.status not in ("processed", "error") and time.monotonic() < deadline:
        time.sleep(1)
        uploaded = client.files.retrieve(uploaded.id)
    if uploaded.status == "error":
        raise TailoredError(f"{path}: the service refused the file:\n{uploaded.status_details}",
                            hint=f"run `tailored data check {path}`")
    return uploaded


def create(client: Any, body: dict[str, Any]) -> Any:
    """Create the job (the ``tailored`` extension goes as ``extra_body``)."""
    body = dict(body)
    extension = body.pop("tailored", None)
    return client.fine_tuning.jobs.create(**body, extra_body={"tailored": extension} if extension else None)


def new_events(client: Any, job_id: str, seen: set[str]) -> list[Any]:
    """Events not seen yet, oldest first (pages back from the newest until a seen one)."""
    fresh: list[Any] = []
    after = None
    while True:
        page = client.fine_tuning.jobs.list_events(job_id, limit=100, **({"after": after} if after else {}))
        batch = list(page.data)
        for event in batch:
            if event.id in seen:
                return list(reversed(fresh))
            fresh.append(event)
        if not batch or not page.has_more:
            return list(reversed(fresh))
        after = batch[-1].id


def follow(client: Any, job_id: str, say: Callable[[str], None] = print, poll_s: float = 1.0) -> Any:
    """Print the job's events as they come; return the job once it has ended."""
    seen: set[str] = set()
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        for event in new_events(client, job_id, seen):
            seen.add(event.id)
            stamp = time.strftime("%H:%M:%S", time.localtime(event.created_at))
            say(f"{stamp} {event.level:5s} {event.message}")
        if job.status in TERMINAL:
            if job.status == "succeeded":
                say(f"fine-tuned model: {job.fine_tuned_model}")
            elif job.error is not None:
                say(f"error ({job.error.code}): {job.error.message}")
            return job
        time.sleep(poll_s)
