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
    add_model_flags(p, TrainConfig, skip={"method_options"})
    p.set_defaults(func=run_train, _option_names=add_method_flags(p))


def run_train(args: argparse.Namespace) -> int:
    import tailored.eval.aftertrain  # noqa: F401 - registers the post-training red-flag check
    from tailored.train.run import train

    names = set(TrainConfig.model_fields) | args._option_names
    settings = settings_from(args, names)
    if not args.resume and "data" not in settings and not args.config_file:
        raise SystemExit("tailored train: --data is required (or --config FILE.yaml, or --resume --output RUN)")
    result = train(config_file=args.config_file, resume=args.resume, **settings)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only the first process reports
        return 130 if result.loop.interrupted else 0
    m = result.metrics
    print(f"\ndone: {m['steps']} steps in {m['seconds']:.0f} s · {m['tokens_per_s']:.0f} tokens/s · "
          f"train loss {m['train_loss']:.4f}" + (f" · validation loss {m['validation_loss']:.4f}" if m["validation_loss"] is not None else ""))
    print(f"run folder: {result.run_dir}")
    print(f"talk to it: tailored chat {result.run_dir}")
    return 130 if result.loop.interrupted else 0
