"""``data split``: exact stratification, refusal of label-starving splits, planted leakage is reported."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.readers import read_records
from tailored.data.split import find_leakage, label_of, split_file
from tailored.errors import DataError


def _write(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}) + "\n"
                            for u, a in pairs))
    return path


def _labels(path: Path) -> Counter[str]:
    return Counter(label_of(ex) for ex in read_records(path).examples)


def test_banking77_stratification_is_exact(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "banking77" / "train.jsonl"
    report = split_file(src, tmp_path, validation=0.1, test=0.1, seed=7)
    assert report.stratified_by == "label"
    full = _labels(src)
    assert len(full) == 77
    n = sum(full.values())
    splits = {s: _labels(tmp_path / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert {s: sum(c.values()) for s, c in splits.items()} == {"train": 800, "validation": 100, "test": 100}
    assert len(splits["train"]) == 77  # every label is in train
    for label, k in full.items():
        assert sum(splits[s][label] for s in splits) == k
        for s, size in (("validation", 100), ("test", 100)):  # floor or ceiling of the ideal share, never further
            ideal = k * size / n
            assert math.floor(ideal) <= splits[s][label] <= math.ceil(ideal), (label, s)
    assert report.distribution[next(iter(full))] == {s: splits[s][next(iter(full))] for s in splits if splits[s][next(iter(full))]}
    split_file(src, tmp_path / "again", validation=0.1, test=0.1, seed=7)
    assert (tmp_path / "again" / "test.jsonl").read_text() == (tmp_path / "test.jsonl").read_text()  # same seed, same split


def test_length_stratification_for_free_text(tmp_path: Path) -> None:
    pairs = [(f"Question number {i}?", "word " * (1 + i % 40) + f"answer {i}") for i in range(200)]
    report = split_file(_write(tmp_path / "d.jsonl", pairs), tmp_path / "out", validation=0.1, test=0.1)
    assert report.stratified_by == "length"
    for counts in report.distribution.values():
        assert counts["validation"] in (5, 6) and counts["test"] in (5, 6)  # 50 per quartile × 0.1 ≈ 5


def test_refuses_to_starve_a_label(tmp_path: Path) -> None:
    pairs = [(f"great product {i}", "positive") for i in range(20)] + [(f"awful thing {i}", "negative") for i in range(20)]
    pairs += [("meh, it is fine", "neutral"), ("it is okay I guess", "neutral")]
    path = _write(tmp_path / "d.jsonl", pairs)
    with pytest.raises(DataError, match="neutral"):
        split_file(path, tmp_path / "out", validation=0.3, test=0.3)
    report = split_file(path, tmp_path / "ok", validation=0.1, test=0.1)
    assert report.distribution["neutral"]["train"] >= 1


def test_planted_leakage_is_reported(tmp_path: Path) -> None:
    import random

    from tailored.data.clean import dedupe_text
    from tailored.data.near_dup import DEFAULT_THRESHOLD, jaccard, shingles
    from tailored.data.text_quality import normalize

    def similarity(a: str, b: str) -> float:
        return jaccard(shingles(a), shingles(b))

    def swap(text: str, *where: int) -> str:
        words = text.split(" ")
        for i in where:
            words[i] = "zebra"
        return " ".join(words)

    rng = random.Random(0)
    vocab = "apple river castle engine violin glacier volcano satellite tiger desert harbour lantern meadow orbit quartz".split()
    pairs = [(" ".join(rng.choices(vocab, k=8)) + "?", " ".join(rng.choices(vocab, k=10))) for _ in range(60)]
    near = [(pairs[1][0], swap(pairs[1][1], i)) for i in (2, 4, 9)]  # one answer word changed
    close = [(pairs[2][0], swap(pairs[2][1], i, i + 5)) for i in (0, 1, 3)]  # two words changed: just below
    for copies, original in ((near, pairs[1]), (close, pairs[2])):
        for copy in copies:
            assert normalize("\n".join(copy)) != normalize("\n".join(original))
    assert all(similarity("\n".join(c), "\n".join(pairs[1])) >= DEFAULT_THRESHOLD for c in near)
    assert all(DEFAULT_THRESHOLD - 0.15 <= similarity("\n".join(c), "\n".join(pairs[2])) < DEFAULT_THRESHOLD for c in close)
    path = _write(tmp_path / "d.jsonl", pairs + [pairs[0]] * 3 + near + close)  # planted exact, near and close copies
    report = split_file(path, tmp_path / "out", validation=0.25, test=0.25, seed=0, stratify="none")
    # Independent oracle: a validation/test example leaks when its true Jaccard with one of an earlier split reaches
    # the threshold; it is exact when the normalised texts are equal. (Copies are compared by text: exact copies
    # share one.)
    earlier: list[str] = []
    expected = set()
    for s in ("train", "validation", "test"):
        texts = [dedupe_text(ex) for ex in read_records(tmp_path / "out" / f"{s}.jsonl").examples]
        for text in texts:
            hits = [t for t in earlier if similarity(text, t) >= DEFAULT_THRESHOLD]
            if hits:
                expected.add((text, "exact" if normalize(text) in {normalize(t) for t in hits} else "near"))
        earlier += texts
    source = {ex.line: dedupe_text(ex) for ex in read_records(path).examples}
    reported = {(source[x["line"]], x["kind"]) for x in report.leakage}
    assert {"exact", "near"} <= {kind for _, kind in expected}, "with this seed exact and near copies land in several splits"
    assert reported == expected
    # pairs[2] (line 3) and its close copies (lines 67-69) land in several splits, and are never leakage
    family = {"\n".join(c) for c in [pairs[2], *close]}
    assert sum(any(dedupe_text(ex) in family for ex in read_records(tmp_path / "out" / f"{s}.jsonl").examples)
               for s in ("train", "validation", "test")) >= 2
    assert not {x["line"] for x in report.leakage} & {3, 67, 68, 69}
    assert "LEAKAGE" in report.render()
    clean = read_records(_write(tmp_path / "c.jsonl", pairs[:60])).examples
    assert find_leakage({"train": clean[:40], "validation": clean[40:]}) == []


def test_cli_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = [(f"Is item {i} blue?", "yes" if i % 3 else "no") for i in range(60)]
    path = _write(tmp_path / "d.jsonl", pairs)
    assert main(["data", "split", str(path), "-o", str(tmp_path / "s"), "--test", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes"] == {"train": 54, "validation": 6, "test": 0} and out["stratified_by"] == "label"
    assert not (tmp_path / "s" / "test.jsonl").exists()
    assert out["distribution"]["no"]["validation"] == 2 and out["distribution"]["yes"]["validation"] == 4
