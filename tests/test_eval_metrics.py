"""Metric wrappers agree with scikit-learn, sacrebleu and rouge-score; our own numbers match hand counts."""

from __future__ import annotations

import math

import pytest

from tailored.eval.metrics import OTHER, classification_metrics, diversity, generation_metrics, match_label, normalize, paired_difference

GOLD = ["refund", "billing", "refund", "login", "billing", "refund", "login", "login", "billing", "refund"]
PRED_TEXT = ["Refund", "billing.", "login", "login", "refund", "refund", "I think it's login", "login", "Billing", "nonsense"]


def test_match_label_normalises_and_flags_outside_answers() -> None:
    labels = ["refund", "billing", "login"]
    assert match_label("  Refund. ", labels) == "refund"
    assert match_label("billing\nbecause the invoice", labels) == "billing"
    assert match_label("I think it's login", labels) == OTHER
    assert normalize('"Hello   World!"') == "hello world"


def test_nearest_label_maps_near_misses_only() -> None:
    from tailored.eval.metrics import nearest_label

    labels = ["card_not_working", "card_arrival", "refund_not_showing_up"]
    assert nearest_label("card_not_work", labels) == "card_not_working"
    assert nearest_label("Card_Arrival", labels) == "card_arrival"  # exact (normalised) match first
    assert nearest_label("refund not showing", labels) == "refund_not_showing_up"


def test_classification_metrics_agree_with_sklearn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    labels = ["billing", "login", "refund"]
    preds = [match_label(p, labels) for p in PRED_TEXT]
    m = classification_metrics(GOLD, preds, labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(GOLD, preds))
    for avg in ("macro", "weighted"):
        assert m[f"{avg}_f1"] == pytest.approx(f1_score(GOLD, preds, labels=labels, average=avg, zero_division=0))
        assert m[f"{avg}_precision"] == pytest.approx(precision_score(GOLD, preds, labels=labels, average=avg, zero_division=0))
        assert m[f"{avg}_recall"] == pytest.approx(recall_score(GOLD, preds, labels=labels, average=avg, zero_division=0))
    per = {row["label"]: row for row in m["per_label"]}
    assert per["login"]["support"] == 3 and per["refund"]["support"] == 4
    assert per["login"]["recall"] == pytest.approx(2 / 3)
    assert m["outside_label_set"] == pytest.approx(2 / 10)  # "I think it's login" and "nonsense"
    # most confused pairs are counted from the mistakes
    pairs = {(c["gold"], c["predicted"]): c["count"] for c in m["most_confused"]}
    assert pairs[("refund", "login")] == 1 and pairs[("billing", "refund")] == 1 and pairs[("refund", OTHER)] == 1
    assert sum(pairs.values()) == sum(g != p for g, p in zip(GOLD, preds))


def test_generation_metrics_agree_with_sacrebleu_and_rouge() -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    refs = ["The cat sat on the mat.", "Paris is the capital of France.", "Water boils at 100 degrees."]
    preds = ["The cat sat on a mat.", "paris is the capital of france", "It boils at 100."]
    m = generation_metrics(refs, preds)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = sum(scorer.score(r, p)[key].fmeasure for r, p in zip(refs, preds)) / 3
        assert m[key] == pytest.approx(expected)
    assert m["exact_match"] == pytest.approx(1 / 3)  # case and final punctuation are normalised away
    assert m["length_ratio"] == pytest.approx((6 / 6 + 6 / 6 + 4 / 5) / 3)


def test_diversity_counts() -> None:
    d = diversity(["a b c", "a b c", "a b c", "x y"])
    # unigrams: a b c a b c a b c x y -> 5 unique of 11; bigrams: ab bc ab bc ab bc xy -> 3 of 7
    assert d["distinct_1"] == pytest.approx(5 / 11)
    assert d["distinct_2"] == pytest.approx(3 / 7)
    assert d["identical_share"] == pytest.approx(0.75)
    assert d["most_repeated"] == {"text": "a b c", "count": 3}
    varied = diversity(["one two", "three four", "five six", "seven eight"])
    assert varied["identical_share"] == 0.25 and varied["distinct_2"] == 1.0
    assert varied["mean_similarity"] < d["mean_similarity"]


def test_paired_difference_standard_error_and_interval() -> None:
    before = [1, 1, 1, 1, 0, 1, 0, 1, 1, 1] * 3
    after = [0, 1, 0, 1, 0, 0, 0, 1, 1, 0] * 3
    diffs = [a - b for a, b in zip(after, before)]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    out = paired_difference(before, after)
    assert out["delta"] == pytest.approx(mean) == pytest.approx(-0.4)
    assert out["se"] == pytest.approx(sd / math.sqrt(len(diffs)))
    assert out["ci_low"] <= out["delta"] <= out["ci_high"] < 0
    same = paired_difference(before, before)
    assert same["delta"] == 0 and same["se"] == 0
