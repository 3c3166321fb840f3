"""``data clean``: every reason is found, logged with its line, and nothing else is removed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.clean import REASONS, clean_file
from tailored.data.near_dup import cross_duplicates, greedy_dedupe
from tailored.data.text_quality import garbage_reason

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


@pytest.fixture()
def dirty(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, dict[str, int]]:
    """A file with one planted example per removal reason; returns it and the line of each plant."""
    lines = [chat(u, a) for u, a in DISTINCT]
    plants = {
        "exact_duplicate": chat(*DISTINCT[0]),
        "near_duplicate": chat("how do I reset my password??", "Open settings, then security and choose reset password"),
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
    assert "near_duplicate" in report.render() and "line" in next(r["detail"] for r in rows if r["reason"] == "near_duplicate")


def test_keep_flags_but_keeps(dirty, tmp_path: Path) -> None:
    path, where = dirty
    report = clean_file(path, tmp_path / "out.jsonl", keep=["near_duplicate", "exact_duplicate"])
    kept = (tmp_path / "out.jsonl").read_text().splitlines()
    raw = path.read_text().splitlines()
    assert raw[where["near_duplicate"] - 1] in kept and raw[where["exact_duplicate"] - 1] in kept
    assert report.counts(kept=True) == {"exact_duplicate": 1, "near_duplicate": 1}
    rows = [json.loads(x) for x in (tmp_path / "out.removed.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rows if r["kept"]} == {"exact_duplicate", "near_duplicate"}


def test_near_duplicates_found_and_unrelated_not() -> None:
    texts = [u + " " + a for u, a in DISTINCT]
    assert greedy_dedupe(texts) == []  # "reset my password" vs "change my password" is related, not a copy
    variants = [t.upper() + "!!" for t in texts[:3]] + [texts[3].replace("eight", "8 (eight)")] + [texts[4] + " "]
    found = {j for j, _, _ in cross_duplicates(texts, variants)}
    assert found == {0, 1, 2, 3, 4}
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
    """Dolly has no duplicate prompts; 30 planted edited copies must be found, and only they."""
    rows = (shared_data / "dolly-open-qa" / "train.jsonl").read_text().splitlines()[:400]
    rng = random.Random(1)
    planted = []
    for line in rng.sample(rows, 30):
        obj = json.loads(line)
        obj["messages"][1]["content"] = obj["messages"][1]["content"].lower().rstrip("?") + " ?"
        planted.append(json.dumps(obj))
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows + planted) + "\n")
    report = clean_file(path, tmp_path / "o.jsonl")
    flagged = {f.line for f in report.flags}
    assert flagged == set(range(401, 431))
