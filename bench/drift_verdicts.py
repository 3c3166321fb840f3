"""Drift verdicts on real traffic: BANKING77 against itself (several seeds), held-back intents, dolly questions.

Held-back intents are compared on their inputs only (a served model would answer them with one of its
training labels). Prints, per scenario, the verdict and every statistic with its p-value, so the false-alarm behaviour
(same-distribution traffic over seeds) and the power (other intents, another domain) are read in one run.

    python bench/drift_verdicts.py [--data ../shared/data] [--seeds 10]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from tailored.drift.compare import Sample, compare
from tailored.drift.run import Embeddings


def rows(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


def line(name: str, report) -> str:
    stats = " · ".join(f"{c.name} {c.test['value']:.3f} (p {c.test['p_value']:.3f})" for c in report.checks if c.test)
    return f"{name:<28} {report.verdict:<9} {stats}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    data = Path(args.data)
    bank = rows(data / "banking77" / "train.jsonl") + rows(data / "banking77" / "validation.jsonl")
    dolly = rows(data / "dolly-open-qa" / "validation.jsonl")[:200]
    t0 = time.time()
    vectors = Embeddings()([r[1]["content"] for r in bank + dolly])
    print(f"embedded {len(bank) + len(dolly)} texts in {time.time() - t0:.1f} s")
    n = len(bank)
    labels = [r[2]["content"] for r in bank]

    def sample(idx: list[int], answers: bool = True) -> Sample:
        rs = [(bank + dolly)[i] for i in idx]
        return Sample([r[1]["content"] for r in rs], vectors[idx], answers=[r[2]["content"] for r in rs] if answers else [],
                      ids=[str(i) for i in idx])

    false_alarms = 0
    for seed in range(args.seeds):
        order = np.random.default_rng(100 + seed).permutation(n).tolist()
        report = compare(sample(order[:900]), sample(order[900:]), labels=sorted(set(labels)), seed=seed)
        false_alarms += report.verdict != "no drift"
        print(line(f"same distribution, seed {seed}", report))
    print(f"false alarms: {false_alarms} of {args.seeds} same-distribution samples")
    for k in (5, 15, 30):
        held = set(random.Random(0).sample(sorted(set(labels)), k))
        train = [i for i in range(1000) if labels[i] not in held]
        new = [i for i in range(1000, n) if labels[i] in held]
        traffic = new + [i for i in range(1000, n) if labels[i] not in held][:len(new)]
        # inputs only: a served model would answer with one of its training labels, so the labels say little here
        report = compare(sample(train), sample(traffic, answers=False), labels=sorted(set(labels) - held))
        print(line(f"{k} held-back intents (50%)", report))
    report = compare(sample(list(range(1000))), sample(list(range(n, n + len(dolly)))), labels=sorted(set(labels)))
    print(line("dolly open questions", report))
    mix = list(range(1000, n))[:150] + list(range(n, n + 50))
    report = compare(sample(list(range(1000))), sample(mix), labels=sorted(set(labels)))
    print(line("25% dolly in banking traffic", report))


if __name__ == "__main__":
    main()
