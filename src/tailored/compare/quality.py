"""The headline quality of a strategy (``tailored eval``'s metrics), per-item scores and a 95% confidence interval.

classification: accuracy (exact label); sql: execution accuracy; generation: ROUGE-L F1. Binary
scores get a Wilson interval, ROUGE-L a seeded bootstrap of its per-item mean.
"""

from __future__ import annotations

import math
import random
from typing import Any

from tailored.eval.metrics import match_label, normalize
from tailored.eval.sql import extract_schema, sql_metrics
from tailored.eval.tasks import TestSet, score

HEADLINE = {"classification": "accuracy", "sql": "execution_accuracy", "generation": "rougeL"}


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap(values: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]


def per_item(task: str, test: TestSet, answers: list[str], labels: list[str] | None) -> list[float]:
    """One score per test item, whose mean is the headline metric."""
    if task == "classification":
        label_set = sorted(set(labels or []) | {r.strip() for r in test.references})
        return [float(match_label(a, label_set) == r.strip()) for a, r in zip(answers, test.references)]
    if task == "sql":
        schemas = [extract_schema(u) or "" for u in test.user_texts()]
        return [float(i["execution_match"]) for i in sql_metrics(schemas, test.references, answers)["items"]]
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(str(r), str(a))["rougeL"].fmeasure for r, a in zip(test.references, answers)]


def quality(task: str, test: TestSet, answers: list[str], labels: list[str] | None) -> dict[str, Any]:
    """``{metric, value, ci_low, ci_high, n, metrics}``: the headline with its interval and every eval metric."""
    items = per_item(task, test, answers, labels)
    n = len(items)
    value = sum(items) / n if n else 0.0
    low, high = wilson(sum(items), n) if task != "generation" else bootstrap(items)
    metrics = score(task, test, answers, labels)
    if task == "generation":  # answers that contain the reference (short facts), a plain second view
        metrics["contains_reference"] = sum(normalize(r) in normalize(a) for r, a in zip(test.references, answers)) / max(n, 1)
    return {"metric": HEADLINE[task], "value": value, "ci_low": low, "ci_high": high, "n": n,
            "items": items, "metrics": {k: v for k, v in metrics.items() if not isinstance(v, list)}}
