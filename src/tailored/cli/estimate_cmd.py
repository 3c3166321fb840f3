"""``tailored estimate``: tokens, memory (fits or not, and what to change), time and money before training."""

from __future__ import annotations

import argparse
import json

from tailored.estimate.memory import METHODS, OPTIMIZERS, SHARDING


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="Tokens, memory per device, time and cost of a fine-tuning run, before running it.",
                       description="Estimate a fine-tuning run before starting it. Memory is computed from the model's "
                                   "shape; time from FLOPs and the device's throughput (measured here for --cpu).")
    p.add_argument("--data", default=None, help="Training file (JSONL, any supported format).")
    p.add_argument("--model", default="smollm2", help="Size (7b, 13b, 70b, 8b), preset (llama-3.1-8b, t0-3b), model folder, or smollm2.")
    p.add_argument("--method", default="lora", choices=METHODS)
    p.add_argument("--epochs", type=int, default=None, help="Passes over the data [default: auto from the example count].")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpu", default=None, help="GPU name from the price table (h100, a100-80gb, rtx4090, ...).")
    where.add_argument("--cpu", action="store_true", help="This machine (the default): memory and speed measured here.")
    p.add_argument("--devices", type=int, default=1, help="Devices sharing the run.")
    p.add_argument("--sharding", default="auto", choices=("auto",) + SHARDING, help="auto: fsdp when --devices > 1.")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=1, help="Sequences per device per micro-batch.")
    p.add_argument("--max-seq-length", dest="max_seq_length", type=int, default=1024)
    p.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "mixed"))
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    p.add_argument("--lora-r", dest="lora_r", type=int, default=16)
    p.add_argument("--lora-targets", dest="lora_targets", default="all-linear", help="all-linear, attention, or q_proj,v_proj,...")
    p.add_argument("--prices", default=None, help="YAML file overriding the shipped price/device table.")
    p.add_argument("--calibrate", default="auto", choices=("auto", "model", "matmul", "none"),
                   help="CPU speed: a few real steps of the model (auto/model), a matmul benchmark, or none.")
    p.add_argument("--utilisation", type=float, default=None, help="Share of the GPU's peak throughput [default: price table].")
    p.add_argument("--tokenizer", default=None, help="Model whose tokenizer counts tokens when --model is a size.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_estimate)


def run_estimate(args: argparse.Namespace) -> int:
    from tailored.estimate.report import estimate

    result = estimate(
        model=args.model, data=args.data, method=args.method, epochs=args.epochs, device=args.gpu or "cpu",
        devices=args.devices, sharding=args.sharding, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
        gradient_checkpointing=args.gradient_checkpointing, precision=args.precision, optimizer=args.optimizer,
        lora_r=args.lora_r, lora_targets=args.lora_targets, prices=args.prices, calibrate=args.calibrate,
        utilisation=args.utilisation, tokenizer=args.tokenizer,
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
    return 0
