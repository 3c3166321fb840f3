"""``tailored train``: fine-tune with a progress bar; every setting is a flag of the same name as in YAML."""

from __future__ import annotations

import argparse
import os

from tailored.cli.common import add_method_flags, add_model_flags, settings_from
from tailored.config.schema import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="Fine-tune a model on your data.",
                       description="Fine-tune a model. Settings may come from --config FILE.yaml; flags override it.")
    p.add_argument("--config", dest="config_file", default=None, help="YAML file of settings (same names as the flags).")
    p.add_argument("--resume", action="store_true", help="Continue the run in --output from its newest checkpoint.")
    p.add_argument("--provider", default="local", choices=("local", "openai"),
                   help="local: train here; openai: check the data here, then upload it and run a fine-tuning job on an "
                        "OpenAI-compatible service (a `tailored serve` or another) and follow it. [default: local]")
    p.add_argument("--base-url", dest="base_url", default=None,
                   help="With --provider openai: the service's URL [default: $TAILORED_URL, else http://127.0.0.1:8000/v1].")
    p.add_argument("--api-key", dest="api_key", default=None, help="With --provider openai: its key [default: $TAILORED_API_KEY].")
    p.add_argument("--from", "--from-run", dest="from_run", default=None, metavar="RUN",
                   help=TrainConfig.model_fields["from_run"].description.replace(" CLI: --from.", ""))
    add_model_flags(p, TrainConfig, skip={"method_options", "from_run"})
    p.set_defaults(func=run_train, _option_names=add_method_flags(p))


def run_train(args: argparse.Namespace) -> int:
    from tailored.train.run import train

    names = set(TrainConfig.model_fields) | args._option_names
    settings = settings_from(args, names)
    if not args.resume and "data" not in settings and not args.config_file:
        raise SystemExit("tailored train: --data is required (or --config FILE.yaml, or --resume --output RUN)")
    if args.provider == "openai":
        return _managed(args, settings)
    from tailored.train.launch import check_before_launch, launch_settings, needs_launch, run_launched, torchrun_command

    launch = launch_settings(settings, args.config_file, args.resume)
    if needs_launch(launch):  # --nproc/--nnodes or a sharded strategy: torchrun runs this same command per process
        check_before_launch(settings, args.config_file, args.resume)
        return run_launched(torchrun_command(settings, launch, config_file=args.config_file, resume=args.resume), launch)
    result = train(config_file=args.config_file, resume=args.resume, **settings)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only the first process reports
        return 130 if result.loop.interrupted else 0
    m = result.metrics
    print(f"\ndone: {m['steps']} steps in {m['seconds']:.0f} s · {m['tokens_per_s']:.0f} tokens/s · "
          f"train loss {m['train_loss']:.4f}" + (f" · validation loss {m['validation_loss']:.4f}" if m["validation_loss"] is not None else ""))
    print(f"run folder: {result.run_dir}")
    print(f"talk to it: tailored chat {result.run_dir}")
    return 130 if result.loop.interrupted else 0


def _managed(args: argparse.Namespace, settings: dict) -> int:
    """``--provider openai``: the local data check, then upload, create the job and follow it."""
    from tailored.config import load_train_config
    from tailored.data.check import check_file
    from tailored.errors import DataError
    from tailored.jobs import client as api
    from tailored.methods import method_options

    cfg = load_train_config(settings, yaml_path=args.config_file, methods=method_options())
    for path in filter(None, (cfg.data, cfg.validation_file)):
        report = check_file(path, format=cfg.format, min_examples=1 if path == cfg.validation_file else 10)
        if report.has_errors:
            raise DataError(f"{path}: the data has problems, nothing was uploaded\n{report.render(limit=20)}",
                            hint=f"run `tailored data check {path}` for the full report")
    openai = api.connect(args.base_url, args.api_key)
    training = api.upload(openai, cfg.data)
    validation = api.upload(openai, cfg.validation_file) if cfg.validation_file else None
    general = {k: v for k, v in settings.items() if k in ("max_seq_length", "lr_schedule", "warmup_ratio", "weight_decay",
                                                           "early_stopping_patience")}
    if cfg.validation == "none":
        general["validation"] = "none"
    body = api.job_request(model=cfg.model, training_file=training.id, validation_file=validation.id if validation else None,
                           method=cfg.method, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           learning_rate_multiplier=cfg.learning_rate_multiplier, seed=cfg.seed,
                           settings={**cfg.method_options, **general})
    job = api.create(openai, body)
    print(f"job {job.id} created on {openai.base_url}")
    final = api.follow(openai, job.id)
    return api.EXIT_CODES[final.status]
