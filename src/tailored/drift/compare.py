"""Compare traffic with training inputs: every statistic, then one verdict with its evidence.

:func:`compare` takes two :class:`Sample` s (texts, their embeddings, answers and feedback when known)
and returns a :class:`DriftReport`. The verdict:

- ``severe``: the inputs are clearly of another kind (domain-classifier AUC >= 0.85, or at least half
  the inputs far from every training example, or a quarter of the answers outside the training labels);
- ``drift``: a significant (p < ``alpha``) shift of a meaningful size on any check: AUC >= 0.6, MMD,
  far-from-training share at least twice what same-distribution inputs give, label distribution
  (TVD at least 0.1 above what same-sized same-distribution samples give), input length (>= 25% in mean log length), refusal rate (>= 10 points);
- ``no drift`` otherwise. Checks that could not run (no answers logged, not a classification run) are
  ``skipped`` and never count as passed.

Requiring an effect size beside the p-value keeps a large sample from calling a trivial shift drift,
and keeps same-distribution traffic at ``no drift`` (tested over several seeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tailored.drift import explain, stats

ALPHA = 0.01


@dataclass
class Sample:
    """Inputs (the last user turn of each conversation) and what is known about their answers."""

    texts: list[str]
    embeddings: np.ndarray
    answers: list[str | None] = field(default_factory=list)  # the model's (or the training) answer, if known
    feedback: list[str | None] = field(default_factory=list)  # good / bad / None
    ids: list[str] = field(default_factory=list)  # traffic ids (or line numbers of a file)


@dataclass
class Check:
    name: str
    status: str  # ok, drift, severe, skipped
    summary: str
    test: dict[str, Any] | None = None


@dataclass
class DriftReport:
    verdict: str  # no drift, drift, severe
    checks: list[Check]
    most_drifted: list[dict[str, Any]]
    distinctive_words: list[dict[str, Any]]
    distinctive_examples: list[dict[str, Any]]
    n_reference: int
    n_current: int
    feedback: dict[str, Any]
    fixes: list[str] = field(default_factory=list)
    far_ids: list[str] = field(default_factory=list)  # the inputs beyond the far-from-training line

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "n_training": self.n_reference, "n_traffic": self.n_current,
                "checks": [c.__dict__ for c in self.checks], "most_drifted": self.most_drifted,
                "distinctive_words": self.distinctive_words, "distinctive_examples": self.distinctive_examples,
                "feedback": self.feedback, "fixes": self.fixes, "far_from_training_ids": self.far_ids}


def _status(significant: bool, sized: bool, severe: bool = False) -> str:
    if significant and severe:
        return "severe"
    return "drift" if significant and sized else "ok"


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, cap, replace=False)) if n > cap else np.arange(n)


def compare(reference: Sample, current: Sample, *, labels: list[str] | None = None, permutations: int = 500,
            max_examples: int = 2000, alpha: float = ALPHA, seed: int = 0) -> DriftReport:
    """Every check of ``current`` against ``reference`` (at most ``max_examples`` of each, drawn with ``seed``).

    Args:
        labels: the training label set of a classification run (the answers are then compared as labels).
    """
    rng = np.random.default_rng(seed)
    ri = _subsample(len(reference.texts), max_examples, rng)
    ci = _subsample(len(current.texts), max_examples, rng)
    ref_x, cur_x = reference.embeddings[ri], current.embeddings[ci]
    checks: list[Check] = []

    clf, scores = stats.domain_classifier(ref_x, cur_x, permutations=permutations, seed=seed)
    checks.append(Check("domain classifier", _status(clf.p_value < alpha, clf.value >= 0.6, clf.value >= 0.85),
                        f"ROC AUC {clf.value:.3f} (0.5 = indistinguishable; p = {clf.p_value:.3g}, "
                        f"{clf.details['permutations']} permutations)", clf.as_dict()))
    mm = stats.mmd(ref_x, cur_x, permutations=permutations, seed=seed)
    checks.append(Check("MMD", _status(mm.p_value < alpha, True), f"MMD² {mm.value:.4f} (p = {mm.p_value:.3g})", mm.as_dict()))
    far, dist = stats.novelty(ref_x, cur_x)
    expected = far.details["expected_share"]
    checks.append(Check("far from training", _status(far.p_value < alpha, far.value >= 2 * expected, far.value >= 0.5),
                        f"{100 * far.value:.1f}% of inputs farther from every training example than 95% of training "
                        f"examples are from each other (same-distribution: about {100 * expected:.0f}%; p = {far.p_value:.3g})",
                        far.as_dict()))

    ref_texts = [reference.texts[i] for i in ri]
    cur_texts = [current.texts[i] for i in ci]
    ln = stats.mean_shift("input_length", np.array([explain.length(t) for t in ref_texts]),
                          np.array([explain.length(t) for t in cur_texts]), seed=seed)
    checks.append(Check("input length", _status(ln.p_value < alpha, abs(ln.value) >= np.log(1.25)),
                        f"mean words {np.expm1(ln.details['reference_mean']):.1f} in training, "
                        f"{np.expm1(ln.details['current_mean']):.1f} in traffic (geometric; p = {ln.p_value:.3g})", ln.as_dict()))
    checks += _answer_checks(reference, current, ri, ci, labels, alpha, seed)

    statuses = [c.status for c in checks]
    verdict = "severe" if "severe" in statuses else "drift" if "drift" in statuses else "no drift"
    order = np.argsort(-dist)
    most = [{"id": _id(current, ci[j]), "text": cur_texts[j], "distance_to_training": round(float(dist[j]), 4),
             "classifier_score": round(float(scores[j]), 4)} for j in order[:50]]
    by_score = np.argsort(-scores)
    examples = [{"id": _id(current, ci[j]), "text": cur_texts[j], "classifier_score": round(float(scores[j]), 4)}
                for j in by_score[:5]]
    far_ids = [_id(current, ci[j]) for j in np.flatnonzero(dist > far.details["threshold_distance"])]
    return DriftReport(verdict, checks, most, explain.distinctive_words(ref_texts, cur_texts), examples,
                       len(reference.texts), len(current.texts), _feedback(current), far_ids=far_ids)


def _id(sample: Sample, i: int) -> str:
    return sample.ids[i] if sample.ids else str(i + 1)


def _answer_checks(reference: Sample, current: Sample, ri: np.ndarray, ci: np.ndarray, labels: list[str] | None,
                   alpha: float, seed: int) -> list[Check]:
    cur_answers = [current.answers[i] for i in ci if i < len(current.answers) and current.answers[i] is not None]
    ref_answers = [reference.answers[i] for i in ri if i < len(reference.answers) and reference.answers[i] is not None]
    if not cur_answers or not ref_answers:
        why = "no answers in the traffic (logged without answers, or a --traffic file of prompts only)"
        return [Check("answer labels" if labels else "refusal rate", "skipped", why)]
    out = []
    if labels:
        lab = stats.label_shift([a.strip() for a in ref_answers], [a.strip() for a in cur_answers], seed=seed)
        outside = lab.details["outside_training_labels"]
        out.append(Check("answer labels", _status(lab.p_value < alpha, lab.value - lab.details["null_mean"] >= 0.1,
                                                       outside >= 0.25),
                         f"total variation {lab.value:.3f} between training labels and answers (same-distribution "
                         f"samples of these sizes: about {lab.details['null_mean']:.3f}); {100 * outside:.1f}% "
                         f"of answers are no training label (p = {lab.p_value:.3g})", lab.as_dict()))
    ref_ref = np.array([explain.is_refusal(a) for a in ref_answers])
    cur_ref = np.array([explain.is_refusal(a) for a in cur_answers])
    rr = stats.share_shift("refusal_rate", ref_ref, cur_ref, seed=seed)
    out.append(Check("refusal rate", _status(rr.p_value < alpha, rr.value >= 0.10),
                     f"{100 * rr.details['reference_rate']:.1f}% of training answers, {100 * rr.details['current_rate']:.1f}% "
                     f"of traffic answers (p = {rr.p_value:.3g})", rr.as_dict()))
    return out


def _feedback(current: Sample) -> dict[str, Any]:
    marks = [f for f in current.feedback if f]
    bad = sum(f == "bad" for f in marks)
    return {"rated": len(marks), "good": len(marks) - bad, "bad": bad,
            "bad_rate": round(bad / len(marks), 4) if marks else None, "share_rated": round(len(marks) / max(len(current.texts), 1), 4)}
