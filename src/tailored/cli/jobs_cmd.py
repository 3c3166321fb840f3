"""``tailored jobs``: the fine-tuning jobs of a server (``tailored serve`` or any OpenAI-compatible one) from the terminal."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tailored.cli.common import group


def register(sub: argparse._SubParsersAction) -> None:
    jobs = group(sub, "jobs", "Fine-tuning jobs on a server: create, list, follow, cancel, pause, resume.")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = jobs.add_parser(name, help=help, description=help)
        p.add_argument("--url", default=None, help="The server's base URL [default: $TAILORED_URL, else http://127.0.0.1:8000/v1].")
        p.add_argument("--api-key", dest="api_key", default=None, help="Its key [default: $TAILORED_API_KEY].")
        return p

    p = add("create", "Upload the data (checked by the server) and start a job.")
    p.add_argument("--data", required=True, help="Training file (JSONL; a preference file for --method dpo).")
    p.add_argument("--validation", default=None, help="Validation file.")
    p.add_argument("--model", default="smollm2", help="Base model the server fine-tunes [default: smollm2].")
    p.add_argument("--method", default="lora", help="Any method of `tailored methods`; dpo is OpenAI's dpo job type.")
    p.add_argument("--epochs", default="auto", help="Passes over the data (OpenAI: n_epochs) [default: auto].")
    p.add_argument("--batch-size", dest="batch_size", default="auto", help="Examples per optimizer step [default: auto].")
    p.add_argument("--learning-rate-multiplier", dest="learning_rate_multiplier", default="auto", help="[default: auto].")
    p.add_argument("--suffix", default=None, help="Goes into the fine-tuned model's name.")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="Any other `tailored train` setting (e.g. --set lora_r=8); repeatable.")
    p.add_argument("--follow", action="store_true", help="Then print its events until it ends.")
    p.set_defaults(func=run_create)
    p = add("list", "The newest jobs.")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=run_list)
    for name, help in (("follow", "Print a job's events as they come, with the loss and the ETA; exit with its final "
                                  "status (0 succeeded, 1 failed, 3 cancelled)."),
                       ("cancel", "Cancel a job."), ("pause", "Pause a running job at a checkpoint."),
                       ("resume", "Resume a paused job from its checkpoint.")):
        p = add(name, help)
        p.add_argument("job", help="The job id (ftjob-...).")
        p.set_defaults(func=run_follow if name == "follow" else run_control, action=name)


def _number(text: str) -> Any:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        return float(text)


def _settings(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"tailored jobs create: --set {pair!r}: expected NAME=VALUE")
        try:
            out[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[name.replace("-", "_")] = value
    return out


def run_create(args: argparse.Namespace) -> int:
    from tailored.jobs import client as api

    openai = api.connect(args.url, args.api_key)
    training = api.upload(openai, args.data)
    validation = api.upload(openai, args.validation) if args.validation else None
    body = api.job_request(model=args.model, training_file=training.id, validation_file=validation.id if validation else None,
                           method=args.method, epochs=_number(args.epochs), batch_size=_number(args.batch_size),
                           learning_rate_multiplier=_number(args.learning_rate_multiplier), suffix=args.suffix,
                           seed=args.seed, settings=_settings(args.settings))
    job = api.create(openai, body)
    print(f"job {job.id}: {job.status} (training file {training.id})")
    if not args.follow:
        print(f"follow it: tailored jobs follow {job.id}")
        return 0
    return api.EXIT_CODES[api.follow(openai, job.id).status]


def run_list(args: argparse.Namespace) -> int:
    from tailored.jobs import client as api

    page = api.connect(args.url, args.api_key).fine_tuning.jobs.list(limit=args.limit)
    for job in page.data:
        print(f"{job.id}  {job.status:16s} {job.model}  {job.fine_tuned_model or ''}")
    return 0


def run_follow(args: argparse.Namespace) -> int:
    from tailored.jobs import client as api

    return api.EXIT_CODES[api.follow(api.connect(args.url, args.api_key), args.job).status]


def run_control(args: argparse.Namespace) -> int:
    from tailored.jobs import client as api

    jobs = api.connect(args.url, args.api_key).fine_tuning.jobs
    job = getattr(jobs, args.action)(args.job)
    print(f"job {job.id}: {job.status}")
    return 0
