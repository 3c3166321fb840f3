"""Metric functions on plain lists of strings: classification, generation, diversity, paired statistics.

Everything here is pure (no model): scikit-learn, sacrebleu and rouge-score compute the textbook
metrics; we only normalise, aggregate and add the few numbers those libraries lack (answers outside
the label set, most-confused pairs, distinct-n, paired bootstrap).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from difflib import SequenceMatcher
from typing import Any, Sequence

from tailored.data.text_quality import distinct_n

OTHER = "<other>"  # a prediction outside the label set


def normalize(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding punctuation and quotes."""
    text = re.sub(r"\s+", " ", str(text).strip().lower())
    return text.strip(" .,:;!\"'`")


def match_label(answer: str, labels: Sequence[str]) -> str:
    """The label an answer means: exact (normalised) match, else the first line's match, else ``OTHER``."""
    by_norm = {normalize(lab): lab for lab in labels}
    cand = normalize(answer)
    if cand in by_norm:
        return by_norm[cand]
    first = normalize(str(answer).strip().splitlines()[0]) if str(answer).strip() else ""
    if first in by_norm:
        return by_norm[first]
    return OTHER


def nearest_label(answer: str, labels: Sequence[str]) -> str:
    """The label closest to an answer by character similarity (for answers outside the label set)."""
    from difflib import get_close_matches

    found = match_label(answer, labels)
    if found != OTHER or not labels:
        return found
    first = normalize(str(answer).strip().splitlines()[0]) if str(answer).strip() else ""
    by_norm = {normalize(lab): lab for lab in labels}
    close = get_close_matches(first, list(by_norm), n=1, cutoff=0.0)
    return by_norm[close[0]] if close else OTHER


def classification_metrics(golds: Sequence[str], preds: Sequence[str], labels: Sequence[str] | None = None,
                           top_confused: int = 5) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, precision, recall, a per-label table and the most confused pairs.

    Args:
        golds: the reference labels.
        preds: predicted labels, already mapped by :func:`match_label` (``OTHER`` when outside the set).
        labels: the label set (default: the labels seen in ``golds``).
        top_confused: how many (gold, predicted) pairs to list.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = sorted(set(labels or golds))
    golds, preds = list(golds), list(preds)
    out: dict[str, Any] = {"n": len(golds), "accuracy": float(accuracy_score(golds, preds)) if golds else 0.0}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(golds, preds, labels=labels, average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(golds, preds, labels=labels, average=None, zero_division=0)
    out["per_label"] = [{"label": lab, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                        for i, lab in enumerate(labels)]
    out["outside_label_set"] = sum(1 for x in preds if x == OTHER) / max(len(preds), 1)
    pairs = Counter((g, p_) for g, p_ in zip(golds, preds) if g != p_)
    out["most_confused"] = [{"gold": g, "predicted": p_, "count": c} for (g, p_), c in pairs.most_common(top_confused)]
    return out


def generation_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Exact match, corpus BLEU and chrF (sacrebleu), mean ROUGE-1/2/L F1 (rouge-score), mean length ratio."""
    import sacrebleu
    from rouge_score import rouge_scorer

    refs, preds = [str(r) for r in references], [str(p) for p in predictions]
    n = max(len(refs), 1)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for r, p in zip(refs, preds):
        for key, score in scorer.score(r, p).items():
            rouge[key] += score.fmeasure / n
    ratios = [len(p.split()) / max(len(r.split()), 1) for r, p in zip(refs, preds)]
    return {
        "n": len(refs),
        "exact_match": sum(normalize(r) == normalize(p) for r, p in zip(refs, preds)) / n,
        "bleu": float(sacrebleu.corpus_bleu(preds, [refs]).score) if refs else 0.0,
        "chrf": float(sacrebleu.corpus_chrf(preds, [refs]).score) if refs else 0.0,
        **rouge,
        "length_ratio": sum(ratios) / n,
    }


def diversity(outputs: Sequence[str], max_pairs: int = 2000, seed: int = 0) -> dict[str, Any]:
    """How varied a set of generations is (for mode-collapse detection).

    distinct-n: unique n-grams / all n-grams over every output (words as ``data stats`` counts them,
    :func:`tailored.data.text_quality.distinct_n`; 0 when there are none); identical_share: share of outputs
    equal to the most common output; mean_similarity: mean difflib ratio over (sampled) pairs.
    """
    texts = [normalize(o) for o in outputs]
    out: dict[str, Any] = {"n": len(texts)}
    for n in (1, 2):
        out[f"distinct_{n}"] = distinct_n(outputs, n, digits=None) or 0.0
    counts = Counter(texts)
    top, top_n = counts.most_common(1)[0] if counts else ("", 0)
    out["identical_share"] = top_n / max(len(texts), 1)
    out["unique_outputs"] = len(counts)
    out["most_repeated"] = {"text": top[:200], "count": top_n}
    pairs = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))]
    if len(pairs) > max_pairs:
        pairs = random.Random(seed).sample(pairs, max_pairs)
    sims = [SequenceMatcher(None, texts[i], texts[j]).ratio() for i, j in pairs]
    out["mean_similarity"] = sum(sims) / len(sims) if sims else 0.0
    return out


def paired_difference(before: Sequence[float], after: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean(after - before) over paired items, its standard error and a 95% paired-bootstrap interval."""
    diffs = [a - b for a, b in zip(after, before)]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "delta": 0.0, "se": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    rng = random.Random(seed)
    boots = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return {"n": n, "delta": mean, "se": math.sqrt(var / n), "ci_low": boots[int(0.025 * n_boot)],
            "ci_high": boots[int(0.975 * n_boot) - 1]}
