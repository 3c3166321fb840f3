"""``tailored methods``: every fine-tuning method, what it trains and what it costs on your model."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="List the fine-tuning methods with their size and memory on a model.",
                       description="List every fine-tuning method: what it trains, its trainable parameters and "
                                   "adapter size on --model (computed from the model's shapes, no weights loaded), "
                                   "training memory, whether it merges, when to pick it, and its default settings.")
    p.add_argument("--model", default="smollm2", help="Base model to size the methods for [default: smollm2].")
    p.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    p.set_defaults(func=run_methods)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _flag(name: str, value: object) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {','.join(value) if isinstance(value, list) else value}"


def run_methods(args: argparse.Namespace) -> int:
    from tailored.methods.catalog import catalog
    from tailored.models.load import local_folder

    rows = catalog(local_folder(args.model))
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    head = ("method", "trains", "trainable", "adapter", "train memory*", "merges")
    cells = [(r.name, r.summary, f"{r.trainable:,} ({100 * r.trainable / r.total:.2f}%)", _size(r.adapter_bytes),
              _size(r.train_memory_bytes), "yes" if r.mergeable else "no") for r in rows]
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head))]
    print(f"methods for {args.model}:\n")
    for c in [head, tuple("-" * w for w in widths), *cells]:
        print("  ".join(str(v).ljust(w) for v, w in zip(c, widths)).rstrip())
    print("\n* weights + gradients + AdamW state; activations come on top and grow with batch size and length.\n")
    for r in rows:
        defaults = " ".join(_flag(k, v) for k, v in r.defaults.items())
        print(f"{r.name}: {r.when}\n    defaults: {defaults or '(none)'}")
    print("\nuse: tailored train --method NAME --data FILE [settings]; measured trade-offs: docs/methods.md")
    return 0
