"""`tailored compare` and `tailored advise` on small inputs: documents, the persisted index, deterministic few-shot,
the verdict's rules, the table/JSON/HTML, and the commands (tiny model; the real-model proofs are in test_compare_slow)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tailored.cli.main import main
from tailored.compare import advise, compare
from tailored.compare.documents import html_text, split_text
from tailored.compare.index import index_folder, open_index
from tailored.compare.prompts import Pair, few_shot
from tailored.compare.report import render_html, render_text
from tailored.compare.verdict import verdict

QA = Path(__file__).parent / "data" / "docs_qa"


@pytest.fixture(scope="module")
def embedder():
    from tailored.models.embeddings import Embedder

    return Embedder()


def test_html_text_drops_scripts_and_styles_and_chunks_follow_paragraphs() -> None:
    text = html_text((QA / "docs" / "club.html").read_text())
    assert "room 14" in text and "hidden" not in text and "color: grey" not in text
    chunks = split_text("a" * 50 + "\n\n" + "b" * 50 + "\n\n" + ("Word word. " * 100), chunk_chars=200)
    assert chunks[0] == "a" * 50 + "\n" + "b" * 50
    assert all(len(c) <= 200 for c in chunks) and sum(len(c) for c in chunks) > 1000


def test_index_persists_beside_the_docs_and_reembeds_only_changed_files(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(QA / "docs", docs)
    first = open_index(docs, embedder)
    assert first.stats["embedded_files"] == 5 and (index_folder(docs) / "index.faiss").is_file()
    assert index_folder(docs) == tmp_path / "docs.tailored-index"
    t = time.perf_counter()
    second = open_index(docs, embedder)
    print(f"index: first open {first.stats['seconds']:.3f} s, second (re-used) {time.perf_counter() - t:.3f} s")
    assert second.stats["embedded_files"] == 0 and second.stats["reused_files"] == 5
    assert np.array_equal(first.vectors, second.vectors)
    (docs / "river.txt").write_text("The ferry across the Essel is called the Bluebell.\n")
    third = open_index(docs, embedder)
    assert third.stats["embedded_files"] == 1 and third.stats["reused_files"] == 4
    hit = third.search(embedder.encode(["What is the ferry called?"]).numpy(), 1)[0][0]
    assert "Bluebell" in third.chunks[hit[0]].text


def test_few_shot_selection_is_deterministic_and_fits_the_budget() -> None:
    pairs = [Pair(f"question {i}", f"answer {i}") for i in range(6)]
    vectors = np.eye(6, dtype="float32")
    vectors[3] = vectors[4] = vectors[5] = vectors[0]  # four equally similar candidates: ties broken by the seed
    prompts = [[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]]
    query = vectors[:1]
    count = lambda msgs: sum(len(str(m["content"]).split()) for m in msgs)  # noqa: E731
    runs = [few_shot(prompts, query, pairs, vectors, count_tokens=count, max_examples=2, max_prompt_tokens=100, seed=s,
                     default_system=None)[1][0] for s in (0, 0, 1, 2, 3)]
    assert runs[0] == runs[1] and all(set(r) <= {0, 3, 4, 5} and len(r) == 2 for r in runs)
    assert len({tuple(r) for r in runs}) > 1  # another seed, another tie-break
    convs, chosen = few_shot(prompts, query, pairs, vectors, count_tokens=count, max_examples=8, max_prompt_tokens=11, seed=0,
                             default_system=None)
    assert len(chosen[0]) == 2 and count(convs[0]) == 10  # k chosen to fit: 2 words + 4 per example
    assert convs[0][0]["role"] == "system" and convs[0][-1] == {"role": "user", "content": "q"}


def _row(name: str, value: float, lo: float, hi: float, gpu_usd: float, here_s: float, prompt: float, training=None):
    return {"name": name, "quality": {"metric": "accuracy", "value": value, "ci_low": lo, "ci_high": hi, "n": 40},
            "cost_per_1k": {"gpu_usd": gpu_usd, "here_seconds": here_s, "here_usd": 0.0, "gpu_seconds": 0.0},
            "prompt_tokens": prompt, "training": training, "red_flags": [] if training else None}


def test_verdict_fine_tuning_wins_with_margin_cost_and_payback() -> None:
    train = {"here_seconds": 600.0, "gpu_usd": 0.01, "here_usd": 0.0, "gpu_seconds": 5.0}
    report = {"pricing": {"gpu": "h100"}, "strategies": [
        _row("zero-shot", 0.0, 0.0, 0.09, 0.0002, 2000, 600), _row("few-shot", 0.40, 0.26, 0.55, 0.0003, 3000, 900),
        _row("fine-tuned: run", 0.81, 0.66, 0.90, 0.0001, 1000, 60, training=train)]}
    v = verdict(report)
    assert v["winner"] == "fine-tuned: run" and v["kind"] == "fine-tuned"
    text = " ".join(v["reasons"])
    assert "+41.0 points over few-shot" in text and "3.0× cheaper per request than few-shot" in text
    assert "paid back after ~300 requests" in text and "not measured: rag" in text


def test_verdict_tie_within_noise_goes_to_the_cheaper_and_rag_says_why() -> None:
    tied = {"pricing": {"gpu": "h100"}, "strategies": [
        _row("few-shot", 0.70, 0.55, 0.82, 0.0003, 3000, 900),
        _row("fine-tuned: run", 0.65, 0.50, 0.78, 0.0001, 1000, 60, training={"here_seconds": 60.0, "gpu_usd": 0.001})]}
    v = verdict(tied)
    assert v["winner"] == "fine-tuned: run" and "within the noise of the best, few-shot" in " ".join(v["reasons"])
    rag = {"pricing": {"gpu": "h100"}, "strategies": [
        _row("zero-shot", 0.05, 0.0, 0.2, 0.0001, 1000, 40), _row("rag", 0.8, 0.6, 0.9, 0.0003, 3000, 270),
        dict(_row("fine-tuned: run", 0.1, 0.0, 0.3, 0.0001, 1000, 40, training={"here_seconds": 60.0, "gpu_usd": 0.001}),
             train_examples=200)]}
    text = " ".join(verdict(rag)["reasons"])
    assert verdict(rag)["winner"] == "rag" and "the answers are in the documents" in text and "did not learn the facts" in text


def test_advise_recommends_rag_for_facts_in_documents_and_prompting_for_tiny_data(tmp_path: Path) -> None:
    rag = advise(QA / "train.jsonl", docs=QA / "docs", test=QA / "test.jsonl")
    assert rag["recommendation"] == "rag" and rag["data"]["docs"]["answer_facts_in_docs"] >= 0.5
    assert rag["commands"][-1].startswith("tailored compare --test") and "--docs" in rag["commands"][-1]
    small = advise(QA / "train.jsonl")
    assert small["recommendation"] == "prompt" and "only 12 examples" in small["reasons"][0]
    assert any("tailored data split" in r for r in small["reasons"])


def test_advise_recommends_fine_tuning_for_banking77_with_an_estimate(shared_data: Path, capsys) -> None:
    assert main(["advise", "--data", str(shared_data / "banking77" / "train.jsonl"), "--gpu", "a100-80gb"]) == 0
    out = capsys.readouterr().out
    assert "recommendation: fine-tuning (LoRA)" in out and "77 labels" in out and "estimate on a100-80gb" in out
    assert "tailored train --data" in out and "tailored compare --test" in out


def test_compare_end_to_end_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path, home) -> None:
    from tailored.testing.tiny import write_chat_dataset

    train = write_chat_dataset(tmp_path / "train.jsonl", n=48)
    test = write_chat_dataset(tmp_path / "test.jsonl", n=6, seed=1)
    docs = tmp_path / "docs"
    shutil.copytree(QA / "docs", docs)
    report = compare(test, train=train, docs=docs, model=str(tiny_model_dir), max_new_tokens=4, batch_size=3,
                     train_output=str(tmp_path / "run"), shots=3, progress=False)
    names = [r["name"] for r in report["strategies"]]
    assert names == ["zero-shot", "few-shot", "rag", "fine-tuned: run"]  # no --run: one trained with defaults
    tuned = report["strategies"][-1]
    assert tuned["training"]["here_seconds"] > 0 and tuned["red_flags"] is not None
    assert all(len(s) <= 3 for s in report["strategies"][2]["sources"]) and report["strategies"][1]["shots"]["max"] <= 3
    json.dumps(report)
    text = render_text(report)
    assert "95% interval" in text and "verdict:" in text and "p95" in text
    page = render_html(report)
    assert 'class="plot"' in page and "data:image/png;base64," in page and report["verdict"]["winner"] in page


def test_compare_and_advise_commands(tmp_path: Path, tiny_model_dir: Path, home, capsys) -> None:
    from tailored.testing.tiny import write_chat_dataset

    train = write_chat_dataset(tmp_path / "train.jsonl", n=20)
    test = write_chat_dataset(tmp_path / "test.jsonl", n=4, seed=1)
    args = ["compare", "--test", str(test), "--train", str(train), "--model", str(tiny_model_dir), "--strategies",
            "zero-shot,few-shot", "--max-new-tokens", "3", "--json", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "zero-shot" in out and "few-shot" in out and "not measured: rag, fine-tuned" in out
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["verdict"]["winner"] in ("zero-shot", "few-shot") and (tmp_path / "c.html").read_text().count("<img") == 1
    assert main(["compare", "--test", str(test), "--strategies", "magic"]) != 0
    assert "--strategies: magic not known" in capsys.readouterr().err
    assert main(["compare", "--test", str(test), "--docs", str(tmp_path / "nowhere"), "--model", str(tiny_model_dir),
                 "--strategies", "rag"]) != 0
    assert "not a folder" in capsys.readouterr().err


def test_zero_shot_classification_is_held_to_the_label_set(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [{"messages": [{"role": "system", "content": "Name the colour."}, {"role": "user", "content": f"thing {i}"},
                          {"role": "assistant", "content": ["red", "green", "blue"][i % 3]}]} for i in range(6)]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = compare(test, model=str(tiny_model_dir), strategies=["zero-shot"], task="classification", batch_size=3,
                     progress=False)
    row = report["strategies"][0]
    assert "constrained to one of the 3 labels" in row["notes"][0] and row["constrained"]
    assert row["quality"]["metrics"]["outside_label_set"] == 0 and set(row["answers"]) <= {"red", "green", "blue"}


def test_a_failed_training_is_reported_and_the_rest_is_still_measured(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tailored.testing.tiny import write_chat_dataset

    train = write_chat_dataset(tmp_path / "train.jsonl", n=5)  # training needs 10
    test = write_chat_dataset(tmp_path / "test.jsonl", n=3, seed=1)
    report = compare(test, train=train, model=str(tiny_model_dir), strategies=["zero-shot", "fine-tuned"], max_new_tokens=3,
                     train_output=str(tmp_path / "run"), progress=False)
    assert [r["name"] for r in report["strategies"]] == ["zero-shot"]
    assert any(n.startswith("fine-tuned skipped: training on") and "at least 10" in n for n in report["notes"])
    assert "not measured: few-shot, rag, fine-tuned" in report["verdict"]["reasons"][-1]


def _write_pdf(path: Path, text: str) -> None:
    """A one-page PDF with ``text`` in Helvetica (hand-written objects and xref table)."""
    stream = b"BT /F1 18 Tf 10 100 Td (" + text.encode() + b") Tj ET"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    path.write_bytes(out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref))


def test_pdf_documents_are_read_with_pypdf(tmp_path: Path) -> None:
    pytest.importorskip("pypdf")
    from tailored.compare.documents import chunk_file, document_files

    docs = tmp_path / "docs"
    docs.mkdir()
    _write_pdf(docs / "bell.pdf", "The festival bell is copper.")
    (docs / ".hidden.txt").write_text("not a document")
    assert document_files(docs) == [docs / "bell.pdf"]
    assert [c.text for c in chunk_file(docs, docs / "bell.pdf")] == ["The festival bell is copper."]
