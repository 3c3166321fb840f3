"""Two configurations compared over several training seeds: is a lead larger than run-to-run noise?

A paired interval over one run of each configuration covers the noise of the scored examples, not that of
training (another seed holds out another share, orders the data and initialises the adapter otherwise; on
banking77 two seeds of the defaults differ on enough queries to give a ±5-point paired interval around +0.005).
This reads the rows ``bench/quality.py`` wrote (every row keeps its per-example scores), groups them by
configuration with the seed taken off the name (``seed 7`` is the defaults at seed 7, ``r64 alpha32 seed 7``
is ``r64 alpha32`` at seed 7; a name without one is seed 42), and compares each group with the defaults:

- each seed's accuracy and the groups' mean and spread over seeds;
- the difference of the means with a 95% interval from a two-level bootstrap: the seeds of each group drawn
  with replacement, then the scored examples (the same draw for both groups: the pairing), so both sources of
  noise are in it;
- how many of the seed-matched pairs lead the same way.

    .venv/bin/python bench/seeds.py bench/results/quality-banking77-seeds.json --json bench/results/seeds-banking77.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
from pathlib import Path

DEFAULT_SEED = 42  # TrainConfig's


def group_of(config: str) -> tuple[str, int]:
    """(configuration without its seed, seed): ``"r64 alpha32 seed 7"`` → ``("r64 alpha32", 7)``."""
    m = re.fullmatch(r"(.*?)\s*seed (\d+)", config)
    if not m:
        return config, DEFAULT_SEED
    return (m.group(1) or "defaults"), int(m.group(2))


def groups(rows: list[dict], task: str) -> dict[str, dict[int, list[float]]]:
    """Per-example scores by group and seed (the last row of a name wins, as in a rewritten JSON)."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r.get("task") == task and r.get("scores"):
            name, seed = group_of(r["config"])
            out.setdefault(name, {})[seed] = r["scores"]
    return out


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def compare(base: dict[int, list[float]], other: dict[int, list[float]], n_boot: int = 4000, seed: int = 0) -> dict:
    """The difference of the seed-averaged accuracies, with a two-level (seeds, then examples) bootstrap interval."""
    n = len(next(iter(base.values())))
    if any(len(s) != n for s in [*base.values(), *other.values()]):
        raise SystemExit("the rows were scored on different numbers of examples: not paired")
    b_seeds, o_seeds = list(base.values()), list(other.values())
    rng = random.Random(seed)
    boots = []
    for _ in range(n_boot):
        bs = [rng.choice(b_seeds) for _ in b_seeds]
        os_ = [rng.choice(o_seeds) for _ in o_seeds]
        idx = [rng.randrange(n) for _ in range(n)]
        boots.append(sum(mean([s[i] for s in os_]) - mean([s[i] for s in bs]) for i in idx) / n)
    boots.sort()
    matched = sorted(set(base) & set(other))
    leads = [mean(other[s]) - mean(base[s]) for s in matched]
    return {"delta": mean([mean(s) for s in o_seeds]) - mean([mean(s) for s in b_seeds]),
            "ci_low": boots[int(0.025 * n_boot)], "ci_high": boots[int(0.975 * n_boot) - 1],
            "matched_seeds": matched, "matched_leads": leads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="JSON files bench/quality.py wrote (rows are merged, later files win)")
    ap.add_argument("--task", default="banking77")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows: list[dict] = []
    for path in args.results:
        try:
            rows += json.loads(Path(path).read_text())["rows"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"{path}: not a bench/quality.py result ({exc})", file=sys.stderr)
            return 2
    by = groups(rows, args.task)
    if "defaults" not in by:
        print(f"no defaults rows for {args.task} in {args.results}", file=sys.stderr)
        return 2
    report = {"task": args.task, "groups": {}, "vs_defaults": {}}
    for name, seeds in by.items():
        accs = {s: mean(v) for s, v in sorted(seeds.items())}
        spread = statistics.stdev(accs.values()) if len(accs) > 1 else 0.0
        report["groups"][name] = {"seeds": accs, "mean": mean(list(accs.values())), "sd_over_seeds": spread}
        print(f"{name:20s} mean {report['groups'][name]['mean']:.3f} (sd over {len(accs)} seeds {spread:.3f}): "
              + ", ".join(f"seed {s} {a:.3f}" for s, a in accs.items()))
    for name, seeds in by.items():
        if name == "defaults":
            continue
        c = report["vs_defaults"][name] = compare(by["defaults"], seeds)
        same = sum(d > 0 for d in c["matched_leads"]), len(c["matched_leads"])
        print(f"{name} vs defaults: {c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] "
              f"(seeds and examples resampled); ahead at {same[0]} of {same[1]} matched seeds")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
