"""``tailored estimate``: tokens, memory (fits or not, and what to change), time and money before training.

The run is described with ``tailored train``'s own settings (same flags, names and meanings, built from
:class:`TrainConfig` and the methods' options by the same helper), plus the estimate's own: where it
runs (``--gpu``/``--cpu``, ``--devices``), prices, calibration and output.
"""

from __future__ import annotations

import argparse
import json

from tailored.cli.common import add_method_flags, add_model_flags, settings_from
from tailored.config.schema import TrainConfig
from tailored.estimate.report import ESTIMATE_SETTINGS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="Tokens, memory per device, time and cost of a fine-tuning run, before running it.",
                       description="Estimate a fine-tuning run before starting it, from the settings `tailored train` "
                                   "takes (same flags and meanings; --config FILE.yaml too). Memory is computed from "
                                   "the model's shape; time from FLOPs and the device's throughput (measured here for --cpu).")
    p.add_argument("--config", dest="config_file", default=None, help="YAML file of `tailored train` settings; flags override it.")
    add_model_flags(p, TrainConfig, only=ESTIMATE_SETTINGS, more_help={
        "data": "Without it, memory only.",
        "model": "Estimates also take a size (7b, 13b, 70b, 8b) or a preset (llama-3.1-8b, t0-3b).",
    })
    where = p.add_argument_group("where it runs (estimate only)")
    device = where.add_mutually_exclusive_group()
    device.add_argument("--gpu", default=None, help="GPU name from the price table (h100, a100-80gb, rtx4090, ...).")
    device.add_argument("--cpu", action="store_true", help="This machine (the default): memory and speed measured here.")
    where.add_argument("--devices", type=int, default=None,
                       help="Devices sharing the run, as --strategy says [default: --nproc × --nnodes].")
    where.add_argument("--prices", default=None, help="YAML file overriding the shipped price/device table.")
    where.add_argument("--calibrate", default="auto", choices=("auto", "model", "matmul", "none"),
                       help="CPU speed: a few real training steps of the model (auto/model), a matmul benchmark, or none.")
    where.add_argument("--utilisation", type=float, default=None, help="Share of the GPU's peak throughput [default: price table].")
    where.add_argument("--tokenizer", default=None, help="Model whose tokenizer counts tokens when --model is a size.")
    where.add_argument("--json", action="store_true")
    p.set_defaults(func=run_estimate, _option_names=add_method_flags(p))


def run_estimate(args: argparse.Namespace) -> int:
    from tailored.estimate.report import estimate, estimate_config

    config = estimate_config(settings_from(args, set(ESTIMATE_SETTINGS) | args._option_names), args.config_file)
    result = estimate(config, device=args.gpu or "cpu", devices=args.devices, prices=args.prices,
                      calibrate=args.calibrate, utilisation=args.utilisation, tokenizer=args.tokenizer)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
    return 0
