"""``data clean``: every reason is found, logged with its line, and nothing else is removed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.clean import REASONS, clean_file
from tailored.data.near_dup import DEFAULT_THRESHOLD, cross_duplicates, greedy_dedupe, jaccard, shingles
from tailored.data.text_quality import garbage_reason, normalize

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def chat(user: str, answer: str) -> str:
    return json.dumps({"messages": [SYSTEM, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]},
                      ensure_ascii=False)


DISTINCT = [
    ("How do I reset my password?", "Open Settings, then Security, and choose Reset password."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600."),
    ("How many legs does a spider have?", "Spiders have eight legs."),
    ("Translate 'thank you' into German.", "Danke."),
    ("What is 12 times 12?", "144."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("How do I change my password?", "Open Settings, then Account, and pick Change password."),  # related, not a copy
]


# One word changed ("do" → "can"): a real edit, not a copy that normalisation makes identical.
NEAR_COPY = ("How can I reset my password?", DISTINCT[0][1])


def similarity(a: str, b: str) -> float:
    """The true Jaccard similarity of two texts, with the module's own shingles."""
    return jaccard(shingles(a), shingles(b))


@pytest.fixture()
def dirty(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, dict[str, int]]:
    """A file with one planted example per removal reason; returns it and the line of each plant."""
    lines = [chat(u, a) for u, a in DISTINCT]
    plants = {
        "exact_duplicate": chat(*DISTINCT[0]),
        "near_duplicate": chat(*NEAR_COPY),
        "empty_answer": chat("Tell me a joke.", "   "),
        "empty_turn": chat(" \n ", "Hello there."),
        "answer_repeats_prompt": chat("Repeat after me: blue sky", "repeat after me blue sky!"),
        "encoding_garbage": chat("What is a cafÃ©?", "Itâ€™s a coffee shop."),
        "invalid": '{"messages": [{"role": "user", "content": "hi"}',
        "too_long": chat("Summarise: " + "lorem ipsum dolor sit amet " * 40, "Lorem ipsum."),
    }
    where = {}
    for reason, line in plants.items():
        lines.append(line)
        where[reason] = len(lines)
    path = tmp_path / "dirty.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, where


def test_every_reason_is_removed_and_logged_with_its_line(dirty, tmp_path: Path, tiny_model_dir: Path) -> None:
    from tailored.models.load import load_tokenizer

    path, where = dirty
    report = clean_file(path, tmp_path / "out.jsonl", tokenizer=load_tokenizer(tiny_model_dir), max_seq_length=128)
    rows = [json.loads(x) for x in (tmp_path / "out.removed.jsonl").read_text().splitlines()]
    assert {r["reason"]: r["line"] for r in rows} == where
    assert set(report.counts()) == set(REASONS)
    assert all(n == 1 for n in report.counts().values())
    raw = path.read_text().splitlines()
    for r in rows:  # the record written is the original line
        assert r["record"] == (json.loads(raw[r["line"] - 1]) if r["reason"] != "invalid" else raw[r["line"] - 1])
    kept = (tmp_path / "out.jsonl").read_text().splitlines()
    assert kept == raw[: len(DISTINCT)]  # the distinct examples survive, byte for byte
    near = similarity("\n".join(NEAR_COPY), "\n".join(DISTINCT[0]))  # what near-duplicates compare: user and answer
    assert normalize("\n".join(NEAR_COPY)) != normalize("\n".join(DISTINCT[0])) and DEFAULT_THRESHOLD <= near < 0.9
    assert "near_duplicate" in report.render()
    assert next(r["detail"] for r in rows if r["reason"] == "near_duplicate") == f"near-duplicate of line 1 (Jaccard {near:.2f})"


def test_keep_flags_but_keeps(dirty, tmp_path: Path) -> None:
    path, where = dirty
    report = clean_file(path, tmp_path / "out.jsonl", keep=["near_duplicate", "exact_duplicate"])
    kept = (tmp_path / "out.jsonl").read_text().splitlines()
    raw = path.read_text().splitlines()
    assert raw[where["near_duplicate"] - 1] in kept and raw[where["exact_duplicate"] - 1] in kept
    assert report.counts(kept=True) == {"exact_duplicate": 1, "near_duplicate": 1}
    rows = [json.loads(x) for x in (tmp_path / "out.removed.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rows if r["kept"]} == {"exact_duplicate", "near_duplicate"}


# Support answers long enough that a small edit keeps most character 5-grams.
ORIGINALS = [
    "How do I reset my password?\nOpen Settings, then Security, and choose Reset password. We email you a link that works for one hour.",
    "My card payment was declined at the shop.\nCheck that the card is not frozen in the app and that the daily limit covers the amount, then try again.",
    "Can I change the delivery address of my order?\nYes, until the parcel is dispatched: open the order, choose Edit address and save the new one.",
    "Why was I charged twice for one purchase?\nThe second charge is usually a pending authorisation; it disappears within three working days.",
]
# Edited copies (original index, text): a word changed, a clause added, a spelling changed. Jaccard 0.85-0.92.
NEAR = [
    (0, ORIGINALS[0].replace("one hour", "two hours")),
    (1, ORIGINALS[1].replace("shop", "supermarket")),
    (2, ORIGINALS[2].replace("save the new one.", "save the new one before dispatch.")),
    (3, ORIGINALS[3].replace("authorisation", "authorization")),
]
# The same wording about another request: close, but just below the threshold (Jaccard 0.69-0.78).
CLOSE = [
    (0, ORIGINALS[0].replace("password", "PIN")),
    (1, ORIGINALS[1].replace("the card is not frozen", "online payments are enabled")),
    (2, ORIGINALS[2].replace("delivery address", "delivery date").replace("Edit address", "Edit date")),
    (3, ORIGINALS[3].replace("pending authorisation", "renewal fee")),
]


def test_planted_pairs_sit_on_either_side_of_the_threshold() -> None:
    for i, text in NEAR:
        assert normalize(text) != normalize(ORIGINALS[i])  # not a copy that normalisation makes identical
        assert DEFAULT_THRESHOLD <= similarity(text, ORIGINALS[i]) < 0.95, text
    for i, text in CLOSE:
        assert DEFAULT_THRESHOLD - 0.12 <= similarity(text, ORIGINALS[i]) < DEFAULT_THRESHOLD, text
    for a in range(len(ORIGINALS)):
        for b in range(a):
            assert similarity(ORIGINALS[a], ORIGINALS[b]) < 0.1


def test_near_duplicates_found_and_close_texts_not() -> None:
    near, close = [t for _, t in NEAR], [t for _, t in CLOSE]
    found = cross_duplicates(ORIGINALS, near + close)
    assert [(j, k) for j, k, _ in found] == [(j, i) for j, (i, _) in enumerate(NEAR)]  # every copy, nothing close
    assert [sim for _, _, sim in found] == [round(similarity(t, ORIGINALS[i]), 3) for i, t in NEAR]  # the exact Jaccard
    # in one list: each copy is a duplicate of its original; the close texts are kept
    texts = ORIGINALS + near + close
    assert greedy_dedupe(texts) == [(len(ORIGINALS) + j, i, round(similarity(t, ORIGINALS[i]), 3)) for j, (i, t) in enumerate(NEAR)]
    assert greedy_dedupe(ORIGINALS + close) == []
    texts = [u + " " + a for u, a in DISTINCT]
    assert greedy_dedupe(texts) == []  # "reset my password" vs "change my password" is related, not a copy
    assert cross_duplicates(texts, ["What is the boiling point of water?", "Who painted the Mona Lisa?"]) == []


def test_garbage_detector_spares_real_accents() -> None:
    for ok in ("café crème", "São Paulo", "naïve résumé", "Привет мир", "日本語", "It’s fine"):
        assert garbage_reason(ok) is None, ok
    for bad in ("cafÃ© crÃ¨me", "Itâ€™s broken", "bad\x00byte", "lost \ufffd here"):
        assert garbage_reason(bad), bad


def test_cli_clean_and_unknown_keep(dirty, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = dirty
    assert main(["data", "clean", str(path), "-o", str(tmp_path / "c.jsonl"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["removed"]["near_duplicate"] == 1 and summary["kept"] == len(DISTINCT) + 1  # too_long kept: no tokenizer
    assert main(["data", "clean", str(path), "-o", str(tmp_path / "c.jsonl"), "--keep", "typo"]) != 0
    assert "unknown reason" in capsys.readouterr().err


def test_planted_copies_in_real_data(shared_data: Path, tmp_path: Path) -> None:
    """Dolly has no duplicate prompts; of 30 planted copies with one word of the answer changed, exactly those
    whose true Jaccard reaches the threshold are flagged (a changed word weighs more in a short text)."""
    from tailored.data.clean import dedupe_text
    from tailored.data.readers import read_records

    rows = (shared_data / "dolly-open-qa" / "train.jsonl").read_text().splitlines()[:400]
    rng = random.Random(1)
    planted, source = [], {}
    for n in rng.sample(range(len(rows)), 30):
        obj = json.loads(rows[n])
        words = obj["messages"][2]["content"].split(" ")
        i = rng.randrange(len(words))
        words[i] = "truly" if words[i] == "really" else "really"
        obj["messages"][2]["content"] = " ".join(words)
        planted.append(json.dumps(obj))
        source[len(rows) + len(planted)] = n + 1  # planted line → its original's line
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows + planted) + "\n")
    texts = {ex.line: dedupe_text(ex) for ex in read_records(path).examples}
    true = {line: similarity(texts[line], texts[original]) for line, original in source.items()}
    expected = {line for line, sim in true.items() if sim >= DEFAULT_THRESHOLD}
    assert len(expected) >= 20 and len(true) - len(expected) >= 3  # both sides of the threshold are planted
    assert min(true.values()) >= 0.6  # the ones below it are close, not unrelated
    report = clean_file(path, tmp_path / "o.jsonl")
    assert {f.line for f in report.flags} == expected
    assert all(f.detail == f"near-duplicate of line {source[f.line]} (Jaccard {true[f.line]:.2f})" for f in report.flags)
