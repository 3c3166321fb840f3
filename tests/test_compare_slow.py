"""`tailored compare` on the embedded model: RAG wins a documents-QA set; on banking77 the verdict follows the data.

Run with ``-s`` to see the tables (and the index re-use timing).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tailored.compare import compare
from tailored.compare.report import render_html, render_text

QA = Path(__file__).parent / "data" / "docs_qa"
B77_LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_phone", "age_limit", "atm_support", "apple_pay_or_google_pay"]


@pytest.mark.slow
def test_rag_wins_on_facts_in_documents_and_the_index_is_reused(tmp_path: Path, smollm2_dir: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(QA / "docs", docs)
    report = compare(QA / "test.jsonl", train=QA / "train.jsonl", docs=docs, model=str(smollm2_dir),
                     strategies=["zero-shot", "few-shot", "rag"], batch_size=8, progress=False)
    print("\n" + render_text(report))
    by = {r["name"]: r for r in report["strategies"]}
    assert report["verdict"]["winner"] == "rag", report["verdict"]
    assert "the answers are in the documents" in " ".join(report["verdict"]["reasons"])
    assert by["rag"]["quality"]["metrics"]["contains_reference"] >= 0.5 > by["zero-shot"]["quality"]["metrics"]["contains_reference"]
    assert {s["source"] for s in by["rag"]["sources"][0]} >= {"harbour.md"}  # "Who built the Velmora lighthouse?"
    assert by["rag"]["index"]["embedded_files"] == 5
    assert "data:image/png;base64," in render_html(report)
    t = time.perf_counter()
    again = compare(QA / "test.jsonl", docs=docs, model=str(smollm2_dir), strategies=["rag"], limit=2, batch_size=2, progress=False)
    index = again["strategies"][0]["index"]
    print(f"second run: index opened in {index['seconds']:.3f} s (first: {by['rag']['index']['seconds']:.3f} s), "
          f"compare took {time.perf_counter() - t:.1f} s")
    assert index["embedded_files"] == 0 and index["reused_files"] == 5


@pytest.mark.slow
def test_banking77_verdict_follows_the_measurement(tmp_path: Path, shared_data: Path, smollm2_dir: Path) -> None:
    import tailored

    rows = [json.loads(line) for line in (shared_data / "banking77" / "train.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["messages"][2]["content"] in B77_LABELS]
    val = [json.loads(line) for line in (shared_data / "banking77" / "validation.jsonl").read_text().splitlines()]
    test_rows = [r for r in val if r["messages"][2]["content"] in B77_LABELS][:12]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test.write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    run = tailored.train(data=str(train), model=str(smollm2_dir), output=str(tmp_path / "run"), max_steps=8,
                         batch_size=8, learning_rate_multiplier=4.0, threads=1, save_every=1000).run_dir
    report = compare(test, train=train, runs=[run], strategies=["zero-shot", "few-shot", "fine-tuned"], shots=4,
                     max_prompt_tokens=512, batch_size=8, progress=False)
    print("\n" + render_text(report))
    by = {r["name"].split(":")[0]: r for r in report["strategies"]}
    assert set(by) == {"zero-shot", "few-shot", "fine-tuned"}
    assert "constrained to one of the 6 labels" in by["zero-shot"]["notes"][0]
    assert by["zero-shot"]["quality"]["metrics"]["outside_label_set"] == 0  # held to the label set
    # The run lists its labelled neighbours (neighbours: auto on a label set), counted in its prompt tokens and said so;
    # the listing is still shorter than four full example turns.
    assert any("neighbour" in n for n in by["fine-tuned"]["notes"]), by["fine-tuned"]["notes"]
    assert by["fine-tuned"]["prompt_tokens"] < by["few-shot"]["prompt_tokens"] and by["fine-tuned"]["training"]["here_seconds"] > 0
    # The verdict names the measured best (or a cheaper one within its noise). On this 6-label subset the most
    # similar examples usually carry the right label, so few-shot is hard to beat with an 8-step fine-tune; the
    # numbers measured are in docs/compare.md.
    best = max(report["strategies"], key=lambda r: r["quality"]["value"])
    assert report["verdict"]["winner"] == best["name"] or best["quality"]["ci_low"] <= next(
        r for r in report["strategies"] if r["name"] == report["verdict"]["winner"])["quality"]["value"]
    assert "data:image/png;base64," in render_html(report)
