"""The two-sample statistics of drift, on embeddings (unit vectors) and on plain numbers; numpy only.

Every test is a permutation test with a fixed seed, so a verdict is the same every time it is computed:

- :func:`domain_classifier`: can a linear classifier tell the traffic from the training inputs? Its
  out-of-fold ROC AUC (0.5: no) and the permutation p-value. The classifier is ridge regression on the
  embeddings, so each fold's predictions are a fixed matrix times the labels, and a permutation costs a
  matrix-vector product instead of a refit (hundreds of permutations in milliseconds).
- :func:`mmd`: the maximum mean discrepancy under an RBF kernel (median-distance bandwidth), diagonal
  excluded, with a permutation p-value: a second opinion that needs no classifier.
- :func:`novelty`: each input's cosine distance to its nearest training example, against the training
  set's own leave-one-out nearest-neighbour distances (the 95th percentile is the line; about 5% of
  same-distribution inputs cross it, and a binomial tail says how surprising the observed share is).
- :func:`share_shift`, :func:`mean_shift`: a rate (refusals) and a mean (log length) between two
  samples, with permutation p-values; :func:`label_shift`: total variation distance between label
  distributions, with a permutation p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Test:
    """One statistic: its value, a p-value (None when none applies) and the details that explain it."""

    name: str
    value: float
    p_value: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": round(self.value, 4),
                "p_value": None if self.p_value is None else round(self.p_value, 4), **self.details}


def _p(observed: float, null: np.ndarray) -> float:
    """The permutation p-value, (1 + #null >= observed) / (1 + #null): never 0."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` (n,) or (n, P) for binary ``labels`` of the same shape (Mann-Whitney, ties averaged)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.ndim == 1:
        return auc(scores[:, None], labels[:, None])[0]
    if labels.ndim == 1:
        labels = np.repeat(labels[:, None], scores.shape[1], axis=1)
    order = np.argsort(scores, axis=0, kind="mergesort")
    ranks = np.empty_like(scores)
    np.put_along_axis(ranks, order, np.arange(1, len(scores) + 1, dtype=np.float64)[:, None].repeat(scores.shape[1], 1), 0)
    # average the ranks of ties (rare on continuous scores, common on a constant column)
    for col in range(scores.shape[1]):
        s = scores[:, col]
        if len(np.unique(s)) < len(s):
            uniq, inv = np.unique(s, return_inverse=True)
            ranks[:, col] = (np.bincount(inv, weights=ranks[:, col]) / np.bincount(inv))[inv]
    n_pos = labels.sum(0)
    n_neg = len(labels) - n_pos
    u = (ranks * labels).sum(0) - n_pos * (n_pos + 1) / 2
    return u / np.maximum(n_pos * n_neg, 1)


def _folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), k)


def domain_classifier(reference: np.ndarray, current: np.ndarray, *, permutations: int = 200, folds: int = 5,
                      ridge: float = 1.0, seed: int = 0) -> tuple[Test, np.ndarray]:
    """Out-of-fold ROC AUC of a ridge classifier telling ``current`` (label 1) from ``reference`` (label 0).

    Returns the test and every current row's out-of-fold score (higher: more unlike the reference).
    """
    rng = np.random.default_rng(seed)
    x = np.vstack([reference, current]).astype(np.float64)
    x = np.hstack([x, np.ones((len(x), 1))])
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    parts = _folds(len(x), folds, rng)
    maps = []  # (test rows, train rows, the matrix taking the train labels to the test predictions)
    for test in parts:
        train = np.setdiff1d(np.arange(len(x)), test)
        xt = x[train]
        # predictions = x_test (xt' xt + λI)^-1 xt' y_train: one (n_test, n_train) matrix per fold
        maps.append((test, train, x[test] @ np.linalg.solve(xt.T @ xt + ridge * np.eye(x.shape[1]), xt.T)))

    def scores(labels: np.ndarray) -> np.ndarray:  # labels: (n, P) -> out-of-fold scores (n, P)
        out = np.empty(labels.shape)
        for test, train, m in maps:
            out[test] = m @ (labels[train] - labels[train].mean(0))
        return out

    observed = scores(y[:, None])[:, 0]
    value = float(auc(observed, y))
    null_labels = np.stack([rng.permutation(y) for _ in range(permutations)], axis=1)
    null = auc(scores(null_labels), null_labels)
    low, high = np.quantile(null, [0.025, 0.975])
    details = {"null_auc_95": [round(float(low), 4), round(float(high), 4)], "permutations": permutations,
               "folds": folds, "n_reference": len(reference), "n_current": len(current)}
    return Test("domain_classifier_auc", value, _p(value, null), details), observed[len(reference):]


def _sq_distances(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def mmd(reference: np.ndarray, current: np.ndarray, *, permutations: int = 200, seed: int = 0) -> Test:
    """MMD² (RBF kernel, median-heuristic bandwidth, self-pairs excluded) with a permutation p-value."""
    rng = np.random.default_rng(seed)
    x = np.vstack([reference, current]).astype(np.float64)
    d2 = _sq_distances(x)
    bandwidth = float(np.median(d2[np.triu_indices(len(x), 1)])) or 1.0
    k = np.exp(-d2 / bandwidth)
    np.fill_diagonal(k, 0.0)
    m, n = len(reference), len(current)

    def stat(is_current: np.ndarray) -> np.ndarray:  # (N, P) booleans -> (P,) MMD²
        w = np.where(is_current, -1.0 / n, 1.0 / m)
        return np.einsum("ip,ip->p", w, k @ w)

    labels = np.r_[np.zeros(m, bool), np.ones(n, bool)]
    value = float(stat(labels[:, None])[0])
    null = stat(np.stack([rng.permutation(labels) for _ in range(permutations)], axis=1))
    return Test("mmd", value, _p(value, null), {"bandwidth": round(bandwidth, 4), "permutations": permutations,
                                                "null_mmd_95": round(float(np.quantile(null, 0.95)), 6)})


def nearest_distances(reference: np.ndarray, current: np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
    """Cosine distance of each ``current`` row to its nearest ``reference`` row (None: leave-one-out within reference)."""
    loo = current is None
    query = reference if loo else current
    out = np.empty(len(query))
    for i in range(0, len(query), chunk):
        sim = query[i:i + chunk] @ reference.T
        if loo:
            sim[np.arange(sim.shape[0]), np.arange(i, i + sim.shape[0])] = -np.inf
        out[i:i + chunk] = 1.0 - sim.max(1)
    return out


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    return float(min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))))


def novelty(reference: np.ndarray, current: np.ndarray, *, quantile: float = 0.95) -> tuple[Test, np.ndarray]:
    """The share of ``current`` farther from every reference row than ``quantile`` of the reference's own NN distances."""
    own = nearest_distances(reference)
    line = float(np.quantile(own, quantile))
    dist = nearest_distances(reference, current)
    far = int((dist > line).sum())
    expected = 1.0 - quantile
    share = far / max(len(current), 1)
    details = {"threshold_distance": round(line, 4), "expected_share": round(expected, 4), "far": far,
               "n_current": len(current), "median_distance": round(float(np.median(dist)), 4),
               "reference_median_distance": round(float(np.median(own)), 4)}
    return Test("far_from_training", share, binomial_tail(far, len(current), expected), details), dist


def _permuted(values: np.ndarray, n_first: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(P,) differences of means (second - first) after shuffling ``values`` between the two groups."""
    out = np.empty(permutations)
    for i in range(permutations):
        v = rng.permutation(values)
        out[i] = v[n_first:].mean() - v[:n_first].mean()
    return out


def mean_shift(name: str, reference: np.ndarray, current: np.ndarray, *, permutations: int = 500, seed: int = 0) -> Test:
    """Difference of means (current - reference), two-sided permutation p-value."""
    rng = np.random.default_rng(seed)
    reference, current = np.asarray(reference, float), np.asarray(current, float)
    value = float(current.mean() - reference.mean())
    null = _permuted(np.r_[reference, current], len(reference), permutations, rng)
    return Test(name, value, _p(abs(value), np.abs(null)), {"reference_mean": round(float(reference.mean()), 4),
                                                            "current_mean": round(float(current.mean()), 4)})


def share_shift(name: str, reference: np.ndarray, current: np.ndarray, *, permutations: int = 500, seed: int = 0) -> Test:
    """Difference of rates of booleans (current - reference), two-sided permutation p-value."""
    test = mean_shift(name, np.asarray(reference, float), np.asarray(current, float), permutations=permutations, seed=seed)
    test.details = {"reference_rate": test.details["reference_mean"], "current_rate": test.details["current_mean"]}
    return test


def label_shift(reference: list[str], current: list[str], *, permutations: int = 500, seed: int = 0) -> Test:
    """Total variation distance between the label distributions, with a permutation p-value.

    Current answers that are no reference label count as one extra class, ``(other)``.
    """
    rng = np.random.default_rng(seed)
    known = sorted(set(reference))
    index = {label: i for i, label in enumerate(known)}
    codes = np.array([index.get(label, len(known)) for label in [*reference, *current]])
    m = len(reference)
    k = len(known) + 1

    def tvd(c: np.ndarray) -> float:
        a = np.bincount(c[:m], minlength=k) / max(m, 1)
        b = np.bincount(c[m:], minlength=k) / max(len(c) - m, 1)
        return float(0.5 * np.abs(a - b).sum())

    value = tvd(codes)
    null = np.array([tvd(rng.permutation(codes)) for _ in range(permutations)])
    ref_share = np.bincount(codes[:m], minlength=k) / max(m, 1)
    cur_share = np.bincount(codes[m:], minlength=k) / max(len(current), 1)
    moved = sorted(range(k), key=lambda i: -abs(cur_share[i] - ref_share[i]))[:5]
    names = [*known, "(other)"]
    details = {"outside_training_labels": round(float(cur_share[-1]), 4), "null_mean": round(float(null.mean()), 4),
               "most_changed": [{"label": names[i], "training": round(float(ref_share[i]), 4),
                                 "traffic": round(float(cur_share[i]), 4)} for i in moved]}
    return Test("label_distribution_tvd", value, _p(value, null), details)
