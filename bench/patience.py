"""Early-stopping patience, chosen by replaying real validation curves.

A run's validation curve (step, loss, seconds) is replayed under each patience: the run stops at the first
validation that is the ``patience``-th in a row without improvement, and keeps its best weights so far. For each
curve and patience the table gives where it stopped, the kept step, the *regret* (kept loss over the curve's best,
in %) and the training time saved. The chosen patience is the smallest with no regret above ``--tolerance`` on
any curve, at the default validation frequency (about 5 validations per run).

A fine curve is replayed at the default frequency four times, once per phase (validations 1, 5, 9, ...; 2, 6,
10, ...; and so on): which validations a run happens to land on is chance, and a single noisy rise that one phase
catches and another misses is exactly what a patience of 1 trips on.

Curves come from two places:

- ``--from FILE.json``: the rows of ``bench/quality.py`` runs (each trained configuration records its curve), or
  an earlier ``--json`` of this script (its fine curves are replayed again without training);
- ``--train``: runs made to overfit, validated 4× as often as the default (every ``total // 20`` steps) and
  never stopped: banking77 on 300 examples for 10 epochs and Dolly open QA on 200 examples for 6 epochs. They
  are replayed at the default frequency (every 4th validation, each phase) and at the fine one.

    OMP_NUM_THREADS=2 .venv/bin/python bench/patience.py --train --threads 2 \\
        --from bench/results/quality-banking77-defaults.json --json bench/results/patience.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "bench"))
OVERFIT = {"banking77 300 ex, 10 epochs": ("banking77", 300, 10), "dolly 200 ex, 6 epochs": ("dolly-open-qa", 200, 6)}
PATIENCES = (1, 2, 3, 4)
FINE = " (4x validations)"


def replay(curve: list[list[float]], patience: int) -> dict:
    """Where a run with this curve stops under ``patience``, and what it keeps."""
    best = bad = 0
    stop = len(curve) - 1
    for i, (_, loss, _) in enumerate(curve):
        if i == 0 or loss < curve[best][1] - 1e-6:
            best, bad = i, 0
        else:
            bad += 1
            if bad >= patience:
                stop = i
                break
    overall = min(range(len(curve)), key=lambda i: curve[i][1])
    end_s = curve[-1][2] or 1e-9
    return {"stop_step": curve[stop][0], "kept_step": curve[best][0], "best_step": curve[overall][0],
            "regret_pct": 100 * (curve[best][1] / curve[overall][1] - 1), "time_saved_pct": 100 * (1 - curve[stop][2] / end_s)}


def default_frequency(curve: list[list[float]], phase: int, every: int = 4) -> list[list[float]]:
    """Every ``every``-th validation of a fine curve from ``phase`` on (and the last, as training validates at its end)."""
    kept = curve[phase::every]
    return kept if kept and kept[-1] is curve[-1] else [*kept, curve[-1]]


def train_curve(task: str, n: int, epochs: int, threads: int, work: Path) -> list[list[float]]:
    from quality import read_rows, validation_curve, write_rows

    from tailored.train.hparams import resolve
    from tailored.train.run import train
    from tailored.train.validation import auto_holdout_count

    data = write_rows(work / f"{task}-{n}.jsonl", read_rows(DATA / task / "train.jsonl", n))
    out = work / f"{task}-{n}-e{epochs}"
    hp = resolve(n_examples=n - auto_holdout_count(n), epochs=epochs, batch_size="auto", learning_rate_multiplier="auto",
                 base_learning_rate=1.0, max_steps=None, warmup_ratio=0.0, eval_every=None, save_every=None)
    train(data=str(data), output=str(out), threads=threads, red_flags="off", epochs=epochs, early_stopping_patience=0,
          eval_every=max(1, hp.total_steps // 20))
    return validation_curve(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="sources", action="append", default=[], help="a bench/quality.py JSON (repeatable)")
    ap.add_argument("--train", action="store_true", help="also train the overfitting runs (~25 min on 2 cores)")
    ap.add_argument("--tolerance", type=float, default=1.0, help="largest acceptable regret, %% of the best validation loss")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/tailored-patience")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    curves: dict[str, list[list[float]]] = {}
    fine: dict[str, list[list[float]]] = {}
    trained = None
    for source in args.sources:
        if not Path(source).is_file():
            ap.error(f"--from {source}: no such file (a bench/quality.py or bench/patience.py JSON)")
        saved = json.loads(Path(source).read_text())
        trained = saved.get("trained", trained)
        for row in saved.get("rows", []):
            if row.get("validation"):
                curves[f"{row['task']} {row['config']}"] = [c for c in row["validation"] if c[0] > 0]
        for name, curve in saved.get("curves", {}).items():
            if name.endswith(FINE):
                fine[name.removesuffix(FINE)] = curve
            elif "phase" not in name and name not in OVERFIT:
                curves[name] = curve
    if args.train:
        if not DATA.is_dir():
            print(f"{DATA} is missing (the shared datasets are not in a fresh clone)", file=sys.stderr)
            return 2
        import torch

        from tailored.cli.common import quiet

        torch.set_num_threads(args.threads)
        quiet()
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        for name, (task, n, epochs) in OVERFIT.items():
            fine[name] = train_curve(task, n, epochs, args.threads, work)
        trained = time.strftime("%Y-%m-%d %H:%M %Z")
    for name, curve in fine.items():
        curves[name + FINE] = curve
        for phase in range(4):
            curves[f"{name}, phase {phase + 1}"] = default_frequency(curve, phase)
    if not curves:
        ap.error("no curve: pass --from a bench/quality.py JSON with validation curves, or --train")
    table = []
    print(f"{'curve':52s} {'vals':>4s} {'p':>2s} {'stop':>5s} {'kept':>5s} {'best':>5s} {'regret %':>8s} {'saved %':>7s}")
    for name, curve in curves.items():
        for p in PATIENCES:
            r = {"curve": name, "validations": len(curve), "patience": p, **replay(curve, p)}
            table.append(r)
            print(f"{name:52s} {len(curve):4d} {p:2d} {r['stop_step']:5d} {r['kept_step']:5d} {r['best_step']:5d} "
                  f"{r['regret_pct']:8.2f} {r['time_saved_pct']:7.1f}")
    default = [n for n in curves if not n.endswith(FINE)]
    ok = [p for p in PATIENCES if all(r["regret_pct"] <= args.tolerance for r in table if r["patience"] == p and r["curve"] in default)]
    chosen = ok[0] if ok else None
    saved = [r["time_saved_pct"] for r in table if r["patience"] == chosen and r["curve"] in default]
    print(f"\nchosen patience (smallest with regret <= {args.tolerance:g}% on every default-frequency curve): {chosen}"
          + (f"; time saved {min(saved):.0f}-{max(saved):.0f}%" if saved else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "curves": curves, "table": table, "chosen": chosen,
                                               "trained": trained, "measured": time.strftime("%Y-%m-%d %H:%M %Z")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
