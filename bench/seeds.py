"""Two configurations compared over several training seeds: is a lead larger than run-to-run noise?

A paired interval over one run of each configuration covers the noise of the scored examples, not that of
training (another seed holds out another share, orders the data and initialises the adapter otherwise; on
banking77 two seeds of the defaults differ on enough queries to give a ±5-point paired interval around +0.005).
This reads the rows ``bench/quality.py`` wrote (every row keeps its per-example scores), groups them by
configuration with the seed taken off the name (``seed 7`` is the defaults at seed 7, ``r64 alpha32 seed 7``
is ``r64 alpha32`` at seed 7; a name without one is seed 42), and compares each group with the defaults:

- each seed's accuracy and the groups' mean and spread over seeds;
- the difference of the means with a 95% interval from a two-level bootstrap: the seeds drawn with
  replacement (jointly when both groups ran the same seeds, which share a held-out split and data order), then
  the scored examples (the same draw for both groups: the pairing);
- the seed-matched differences, how many are ahead, and a t interval over them. With three seeds a bootstrap
  of the seed level has few distinct draws and reads the between-seed spread low (by about (k-1)/k), so the
  t interval is the wider, safer one; read both.

    .venv/bin/python bench/seeds.py bench/results/quality-banking77-seeds.json --json bench/results/seeds-banking77.json
    .venv/bin/python bench/seeds.py bench/results/quality-banking77-ranked.json --scores ranked  # the ranked labels
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from tailored.config.schema import TrainConfig  # noqa: E402

DEFAULT_SEED = TrainConfig.model_fields["seed"].default
UNTRAINED = ("base (zero-shot)", "seed recipe")  # bench/quality.py's rows that are not Tailored runs of a seed
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def group_of(config: str) -> tuple[str, int]:
    """(configuration without its seed, seed): ``"r64 alpha32 seed 7"`` → ``("r64 alpha32", 7)``."""
    m = re.fullmatch(r"(.*?)\s*seed (\d+)", config)
    if not m:
        return config, DEFAULT_SEED
    return (m.group(1) or "defaults"), int(m.group(2))


SCORES = {"free": "scores", "constrained": "scores_constrained", "ranked": "scores_ranked"}  # bench/quality.py's keys


def groups(rows: list[dict], task: str, scores: str = "free") -> dict[str, dict[int, list[float]]]:
    """Per-example scores by group and seed (the last row of a name wins, as in a rewritten JSON); ``scores``:
    the free answers', those held to the labels, or the ranked labels' (:data:`SCORES`)."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r.get("task") == task and r.get(SCORES[scores]) and r["config"] not in UNTRAINED:
            name, seed = group_of(r["config"])
            out.setdefault(name, {})[seed] = r[SCORES[scores]]
    return out


def compare(base: dict[int, list[float]], other: dict[int, list[float]], n_boot: int = 4000, seed: int = 0) -> dict:
    """The difference of the seed-averaged accuracies, with a two-level (seeds, then examples) bootstrap interval."""
    n = len(next(iter(base.values())))
    if any(len(s) != n for s in [*base.values(), *other.values()]):
        raise SystemExit("the rows were scored on different numbers of examples: not paired")
    matched = sorted(set(base) & set(other))
    joint = set(base) == set(other)
    rng = random.Random(seed)
    boots = []
    for _ in range(n_boot):
        if joint:  # the same seeds in both groups: keep a seed's two runs together
            drawn = [rng.choice(matched) for _ in matched]
            bs, os_ = [base[s] for s in drawn], [other[s] for s in drawn]
        else:
            bs = [rng.choice(list(base.values())) for _ in base]
            os_ = [rng.choice(list(other.values())) for _ in other]
        idx = [rng.randrange(n) for _ in range(n)]
        boots.append(sum(fmean([s[i] for s in os_]) - fmean([s[i] for s in bs]) for i in idx) / n)
    boots.sort()
    leads = [fmean(other[s]) - fmean(base[s]) for s in matched]
    out = {"delta": fmean([fmean(s) for s in other.values()]) - fmean([fmean(s) for s in base.values()]),
           "ci_low": boots[int(0.025 * n_boot)], "ci_high": boots[int(0.975 * n_boot) - 1],
           "seeds_resampled": "jointly" if joint else "per group", "matched_seeds": matched, "matched_leads": leads}
    if 2 <= len(leads) <= 11:  # a t interval over the seed-matched differences
        half = T975[len(leads) - 1] * statistics.stdev(leads) / len(leads) ** 0.5
        out["t_interval"] = [fmean(leads) - half, fmean(leads) + half]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="JSON files bench/quality.py wrote (rows are merged, later files win)")
    ap.add_argument("--task", default="banking77")
    ap.add_argument("--scores", default="free", choices=list(SCORES),
                    help="which answers: free, held to the labels (constrained) or the ranked labels")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows: list[dict] = []
    for path in args.results:
        try:
            rows += json.loads(Path(path).read_text())["rows"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"{path}: not a bench/quality.py result ({exc})", file=sys.stderr)
            return 2
    by = groups(rows, args.task, args.scores)
    if "defaults" not in by:
        print(f"no defaults rows for {args.task} with {args.scores} scores in {args.results}", file=sys.stderr)
        return 2
    report = {"task": args.task, "scores": args.scores, "groups": {}, "vs_defaults": {}}
    for name, seeds in by.items():
        accs = {s: fmean(v) for s, v in sorted(seeds.items())}
        spread = statistics.stdev(accs.values()) if len(accs) > 1 else 0.0
        report["groups"][name] = {"seeds": accs, "mean": fmean(list(accs.values())), "sd_over_seeds": spread}
        print(f"{name:20s} mean {report['groups'][name]['mean']:.3f} (sd over {len(accs)} seeds {spread:.3f}): "
              + ", ".join(f"seed {s} {a:.3f}" for s, a in accs.items()))
    for name, seeds in by.items():
        if name == "defaults":
            continue
        c = report["vs_defaults"][name] = compare(by["defaults"], seeds)
        ahead = sum(d > 0 for d in c["matched_leads"])
        t = f"; t interval over them [{c['t_interval'][0]:+.3f}, {c['t_interval'][1]:+.3f}]" if "t_interval" in c else ""
        print(f"{name} vs defaults: {c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] (seeds "
              f"{c['seeds_resampled']} and examples resampled); ahead at {ahead} of {len(c['matched_leads'])} matched "
              f"seeds (" + ", ".join(f"{d:+.3f}" for d in c["matched_leads"]) + ")" + t)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
