"""Banking77 intent classification: the base model (zero-shot, label list in the prompt) vs a LoRA run.

Trains a LoRA on ``../shared/data/banking77/train.jsonl`` (960 examples for training, 40 held out
for the validation curve), then evaluates on ``validation.jsonl`` (200 examples, never trained on):

- base, zero-shot, with the 77 labels listed in the system prompt (its only chance);
- base on the original prompt (no label list), as the run's side-by-side baseline;
- the LoRA run, on the original prompt, with the red flags (probe + mode-collapse check).

Prints accuracy and macro F1 for each and the ratio tuned/base. Usage (about 30-45 min on a busy 2-core machine):

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/eval_banking77.py [--max-steps 40] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-steps", type=int, default=40, help="optimizer steps (CPU budget; 40 x 8 = 320 examples)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--heldout", type=int, default=40, help="training examples held out for the validation curve")
    ap.add_argument("--zero-shot-limit", type=int, default=100,
                    help="score the base zero-shot on the first N test examples (its prompt is ~600 tokens)")
    ap.add_argument("--lr-multiplier", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N validation examples")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write all results here")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} is missing (the shared datasets are not in a fresh clone)", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(1)
    from tailored.cli.common import quiet
    from tailored.eval.redflags import render
    from tailored.eval.run import evaluate
    from tailored.eval.tasks import read_test_set, score
    from tailored.train.run import train

    quiet()
    work = Path(args.work or tempfile.mkdtemp(prefix="tailored-banking77-"))
    work.mkdir(parents=True, exist_ok=True)
    labels = json.loads((DATA / "labels.json").read_text())
    rows = [json.loads(line) for line in (DATA / "train.jsonl").read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[args.heldout:]))
    (work / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[: args.heldout]))
    # The zero-shot prompt: the same test examples with the label list in the system prompt.
    test_rows = [json.loads(line) for line in (DATA / "validation.jsonl").read_text().splitlines() if line.strip()]
    listed = "Reply with exactly one of these labels and nothing else: " + ", ".join(labels) + "."
    for r in test_rows:
        r["messages"][0]["content"] = r["messages"][0]["content"] + " " + listed
    (work / "test_with_labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))

    results: dict[str, dict] = {}
    run_dir = work / "run"
    t = time.time()
    if not (run_dir / "adapter").is_dir():
        train(data=str(work / "train.jsonl"), validation=str(work / "heldout.jsonl"), output=str(run_dir),
              max_steps=args.max_steps, batch_size=args.batch_size, learning_rate_multiplier=args.lr_multiplier,
              max_seq_length=192, threads=1, red_flags="off")
    train_s = time.time() - t
    print(f"trained in {train_s:.0f} s", flush=True)
    t = time.time()
    tuned = evaluate(run_dir, DATA / "validation.jsonl", task="classification", labels=labels, limit=args.limit, batch_size=8)
    print(f"tuned + base evaluated in {time.time() - t:.0f} s", flush=True)
    results["base_original_prompt"] = tuned["models"]["base"]["metrics"]
    results["lora"] = tuned["models"]["tuned"]["metrics"]
    print(f"lora accuracy {results['lora']['accuracy']:.1%}", flush=True)

    t = time.time()
    zero = evaluate("smollm2", work / "test_with_labels.jsonl", task="classification", baseline=None, probe=None,
                    collapse=False, labels=labels, limit=args.zero_shot_limit, batch_size=8)
    results["base_zero_shot_label_list"] = zero["models"]["tuned"]["metrics"]
    # The same subset for the other two, re-scored from their cached answers.
    subset = read_test_set(DATA / "validation.jsonl", args.zero_shot_limit)
    k = len(subset.references)
    for name, model in (("base_original_prompt", "base"), ("lora", "tuned")):
        results[f"{name}_first_{k}"] = score("classification", subset, tuned["models"][model]["answers"][:k], labels)
    print(f"base zero-shot evaluated in {time.time() - t:.0f} s", flush=True)

    print("\nbanking77 validation (77 labels, chance 1.3%)")
    print(f"{'model':34s} {'examples':>9s} {'accuracy':>9s} {'macro F1':>9s} {'weighted F1':>12s} {'outside set':>12s}"
          f" {'acc. nearest':>13s}")
    for name, m in results.items():
        print(f"{name:34s} {m['n']:9d} {m['accuracy']:9.1%} {m['macro_f1']:9.3f} {m['weighted_f1']:12.3f} {m['outside_label_set']:12.1%}"
              f" {m.get('accuracy_nearest_label', 0):13.1%}")
    base_acc = results["base_zero_shot_label_list"]["accuracy"]
    lora_same = results[f"lora_first_{k}"]["accuracy"]
    ratio = f"{lora_same / base_acc:.1f}x" if base_acc > 0 else f"n/a (base 0%, LoRA {lora_same:.1%})"
    print(f"ratio accuracy lora / base zero-shot (same {k} examples): {ratio}")
    print(f"training: {train_s:.0f} s ({args.max_steps} steps x {args.batch_size} examples)")
    print("red flags:\n" + render(tuned["red_flags"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "report": tuned, "train_seconds": train_s}, indent=1))
    print(f"run folder: {run_dir}  (tailored report {run_dir} --html report.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
