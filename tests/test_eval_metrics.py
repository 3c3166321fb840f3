"""Metrics match hand counts (the libraries behind them are not compared with themselves)."""

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


def test_classification_metrics_match_hand_counts() -> None:
    labels = ["billing", "login", "refund"]
    preds = [match_label(p, labels) for p in PRED_TEXT]
    assert preds == ["refund", "billing", "login", "login", "refund", "refund", OTHER, "login", "billing", OTHER]
    m = classification_metrics(GOLD, preds, labels)
    assert m["accuracy"] == pytest.approx(6 / 10)
    # per label (TP / predicted, TP / gold): billing 2/2, 2/3; login 2/3, 2/3; refund 2/3, 2/4 (answers outside
    # the label set are misses, never a label of their own)
    f1 = {"billing": 0.8, "login": 2 / 3, "refund": 4 / 7}
    per = {row["label"]: row for row in m["per_label"]}
    assert per["billing"]["precision"] == pytest.approx(1.0) and per["billing"]["recall"] == pytest.approx(2 / 3)
    assert per["login"]["precision"] == pytest.approx(2 / 3) and per["login"]["recall"] == pytest.approx(2 / 3)
    assert per["refund"]["precision"] == pytest.approx(2 / 3) and per["refund"]["recall"] == pytest.approx(1 / 2)
    assert {k: row["f1"] for k, row in per.items()} == pytest.approx(f1)
    assert [per[k]["support"] for k in labels] == [3, 3, 4]
    assert m["macro_precision"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    # weighted by support 3, 3, 4
    assert m["weighted_precision"] == pytest.approx((3 * 1 + 3 * 2 / 3 + 4 * 2 / 3) / 10)
    assert m["weighted_recall"] == pytest.approx((3 * 2 / 3 + 3 * 2 / 3 + 4 * 1 / 2) / 10)
    assert m["weighted_f1"] == pytest.approx((3 * f1["billing"] + 3 * f1["login"] + 4 * f1["refund"]) / 10)
    assert m["outside_label_set"] == pytest.approx(2 / 10)  # "I think it's login" and "nonsense"
    # most confused pairs are counted from the mistakes
    pairs = {(c["gold"], c["predicted"]): c["count"] for c in m["most_confused"]}
    assert pairs == {("refund", "login"): 1, ("billing", "refund"): 1, ("login", OTHER): 1, ("refund", OTHER): 1}


def test_generation_metrics_match_hand_counts() -> None:
    refs = ["The cat sat on the mat.", "Paris is the capital of France.", "Water boils at 100 degrees."]
    preds = ["The cat sat on a mat.", "paris is the capital of france", "It boils at 100."]
    m = generation_metrics(refs, preds)
    # BLEU (13a tokens, the final "." is a token, case kept): matched/total n-grams over the corpus,
    # 1-grams 6+4+4 / 7+6+5, 2-grams 4+3+2 / 6+5+4, 3-grams 2+2+1 / 5+4+3, 4-grams 1+1+0 / 4+3+2;
    # brevity penalty exp(1 - 20/18) (18 hypothesis tokens, 20 reference tokens)
    precisions = (14 / 18) * (9 / 15) * (5 / 12) * (2 / 9)
    assert m["bleu"] == pytest.approx(100 * math.exp(1 - 20 / 18) * precisions ** 0.25)
    # ROUGE (lower-cased, stemmed words): sentence F1s, then their mean
    # 1: 5 of 6 words, bigrams 3 of 5, LCS 5; 2: identical; 3: "boil at 100" of 4 vs 5 words, bigrams 2 of 3 vs 4
    assert m["rouge1"] == pytest.approx((5 / 6 + 1 + 2 / 3) / 3)
    assert m["rouge2"] == pytest.approx((3 / 5 + 1 + 4 / 7) / 3)
    assert m["rougeL"] == pytest.approx((5 / 6 + 1 + 2 / 3) / 3)
    assert m["exact_match"] == pytest.approx(1 / 3)  # case and final punctuation are normalised away
    assert m["length_ratio"] == pytest.approx((6 / 6 + 6 / 6 + 4 / 5) / 3)
    # chrF (character 1..6-grams without spaces, β = 2): "thecar" vs "thecat" match 5/6, 4/5, 3/4, 2/3, 1/2, 0/1
    # of the n-grams on both sides; precision equals recall, so the F-score is their mean
    chrf = generation_metrics(["the cat"], ["the car"])["chrf"]
    assert chrf == pytest.approx(100 * (5 / 6 + 4 / 5 + 3 / 4 + 2 / 3 + 1 / 2 + 0) / 6)
    assert generation_metrics(["the cat"], ["the cat"])["chrf"] == pytest.approx(100.0)


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
