"""Tailored's training loop vs. the seed recipe everyone copies, on the embedded model, in one run.

Recipe: HF ``Trainer`` + PEFT LoRA r=8 on q_proj/v_proj, batches padded to the longest, labels =
input_ids (pads masked), logits over the whole vocabulary at every position.
Tailored: the same LoRA configuration and the same examples, through ``tailored.train`` (length-grouped
batches, loss and logits only at labelled positions).

Each side runs in its own subprocess (so peak RSS is its own) with the same thread count, over the
same examples for one epoch. Prints real (non-pad) tokens/s for both, their ratio, peak RSS for both,
and Tailored's utilisation of a measured fp32 matmul ceiling.

    python bench/train_throughput.py [--examples 96] [--batch-size 8] [--threads 1] [--data FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOLLY = REPO.parent / "shared" / "data" / "dolly-open-qa" / "train.jsonl"


def pick_data(path: str | None, n: int, out: Path) -> Path:
    src = Path(path) if path else (DOLLY if DOLLY.is_file() else REPO / "src" / "tailored" / "examples" / "triage_train.jsonl")
    lines = [line for line in src.read_text().splitlines() if line.strip()][:n]
    out.write_text("\n".join(lines) + "\n")
    return out


def run_recipe(data: Path, batch_size: int, threads: int) -> dict:
    from transformers import Trainer

    from recipe import recipe_arguments, recipe_parts
    from tailored.models.load import local_folder

    model, _, encoded, collate, stats = recipe_parts(data, local_folder("smollm2"), threads)
    args = recipe_arguments(per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=2e-4)
    trainer = Trainer(model=model, args=args, train_dataset=encoded, data_collator=collate)
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    return {"seconds": seconds, "real_tokens": stats["real"], "padded_tokens": stats["padded"]}


def run_tailored(data: Path, batch_size: int, threads: int, batching: str = "bucket") -> dict:
    import tailored

    out = Path(tempfile.mkdtemp()) / "run"
    result = tailored.train(data=str(data), output=str(out), epochs=1, batch_size=batch_size, lora_r=8, lora_alpha=16,
                            target_modules="q_proj,v_proj", threads=threads, save_every=10**6, max_seq_length=1024,
                            warmup_ratio=0.0, batching=batching)
    return {"seconds": result.loop.seconds, "real_tokens": result.loop.real_tokens}


def matmul_ceiling(threads: int) -> float:
    """Measured fp32 GFLOP/s of a large matmul on this machine (the ceiling for utilisation)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    start, n = time.time(), 0
    while time.time() - start < 2.0:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.time() - start) / 1e9


def child(kind: str, data: str, batch_size: int, threads: int, result_file: str) -> None:
    from tailored.cli.common import quiet

    quiet()
    if kind == "recipe":
        res = run_recipe(Path(data), batch_size, threads)
    else:
        res = run_tailored(Path(data), batch_size, threads, batching="pack" if kind == "tailored-pack" else "bucket")
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    Path(result_file).write_text(json.dumps(res))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.data, args.batch_size, args.threads, args.child[1])
        return
    tmp = Path(tempfile.mkdtemp())
    data = pick_data(args.data, args.examples, tmp / "data.jsonl")
    results = {}
    for kind in ("recipe", "tailored", "tailored-pack"):
        out = tmp / f"{kind}.json"
        cmd = [sys.executable, __file__, "--child", kind, str(out), "--data", str(data), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads)]
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
        results[kind] = json.loads(out.read_text())
    ceiling = matmul_ceiling(args.threads)
    r, t, p = results["recipe"], results["tailored"], results["tailored-pack"]
    p_tps = p["real_tokens"] / p["seconds"]
    r_tps, t_tps = r["real_tokens"] / r["seconds"], t["real_tokens"] / t["seconds"]
    # LoRA step with a frozen base: ~4 x params FLOPs per token (forward 2N, backward to activations 2N).
    flops_per_token = 4 * 134.5e6
    print(f"data: {data} ({args.examples} examples, batch {args.batch_size}, {args.threads} thread(s), one epoch)")
    print(f"{'':10} {'real tok/s':>10} {'seconds':>8} {'peak RSS GB':>12}")
    print(f"{'recipe':10} {r_tps:10.1f} {r['seconds']:8.1f} {r['peak_rss_gb']:12.2f}   padding {1 - r['real_tokens'] / r['padded_tokens']:.0%}")
    print(f"{'tailored':10} {t_tps:10.1f} {t['seconds']:8.1f} {t['peak_rss_gb']:12.2f}   length-bucketed batches (default)")
    print(f"{'  packed':10} {p_tps:10.1f} {p['seconds']:8.1f} {p['peak_rss_gb']:12.2f}   packing (batching: pack)")
    print(f"ratio tokens/s tailored/recipe: {t_tps / r_tps:.2f}x (target >= 2.0)")
    print(f"ratio tokens/s packed/bucketed: {p_tps / t_tps:.2f}x (the default should be the faster one)")
    print(f"ratio peak RSS tailored/recipe: {t['peak_rss_gb'] / r['peak_rss_gb']:.2f} (target <= 0.6)")
    print(f"fp32 matmul ceiling here: {ceiling:.0f} GFLOP/s -> utilisation tailored {t_tps * flops_per_token / 1e9 / ceiling:.0%}, "
          f"recipe {r_tps * flops_per_token / 1e9 / ceiling:.0%}")


if __name__ == "__main__":
    main()
