"""``data stats``: the numbers are right, and the HTML report is self-contained with real PNG plots."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.stats import compute_stats, write_html
from tailored.data.text_quality import distinct_n


def _write(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]},
                                       ensure_ascii=False) + "\n" for u, a in pairs), encoding="utf-8")
    return path


@pytest.fixture()
def labelled(tmp_path: Path) -> Path:
    pairs = [(f"I love this product, it works {i} times better", "positive") for i in range(12)]
    pairs += [(f"Terrible support, waited {i} hours for nothing at all", "negative") for i in range(8)]
    pairs += [("Le produit est arrivé cassé et le service est nul", "negative"), ("Привет, всё отлично работает", "positive")]
    pairs += [pairs[0], pairs[0]]  # an exact-duplicate cluster of 3
    return _write(tmp_path / "l.jsonl", pairs)


def test_numbers(labelled: Path, tiny_model_dir: Path) -> None:
    from tailored.models.load import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    stats = compute_stats(labelled, tokenizer=tok)
    assert stats.n_examples == 24 and stats.unit == "tokens"
    first_user = "I love this product, it works 0 times better"
    assert stats.lengths["user"][0] == len(tok(first_user, add_special_tokens=False)["input_ids"])
    assert len(stats.lengths["assistant"]) == 24 and len(stats.lengths["example"]) == 24
    assert stats.lengths["example"][0] > stats.lengths["user"][0] + stats.lengths["assistant"][0]  # template tokens
    assert stats.labels == {"positive": 15, "negative": 9}
    assert stats.exact_duplicates == [[1, 23, 24]]
    # templated lines that differ by a number are near-duplicates; the two unrelated ones are not
    assert any({1, 23, 24} <= set(c) for c in stats.near_duplicates)
    assert not any({21, 22} & set(c) for c in stats.near_duplicates)
    assert stats.languages["en"] >= 20 and stats.languages["fr"] == 1 and stats.languages["Cyrillic-script"] == 1
    assert "Cyrillic" in stats.charset and stats.charset["ASCII"] > 0.8
    assert stats.diversity["distinct_1"] == distinct_n(["positive"] * 15 + ["negative"] * 9, 1) == round(2 / 24, 4)
    text = stats.render()
    assert "labels: 2" in text and "exact cluster" in text


def test_distinct_n() -> None:
    assert distinct_n(["a b c", "a b d"], 1) == round(4 / 6, 4)
    assert distinct_n(["a b c", "a b d"], 2) == 0.75
    assert distinct_n(["one"], 2) is None


def test_html_is_self_contained_with_plots(labelled: Path, tmp_path: Path) -> None:
    stats = compute_stats(labelled)
    page = write_html(stats, tmp_path / "r.html").read_text(encoding="utf-8")
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 3  # lengths per role, labels, language/charset
    for b64 in images:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # nothing loaded from outside
    assert "positive" not in page or "Label distribution (2 labels)" in page


def test_cli_stats_json_and_html(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_data / "banking77" / "validation.jsonl"
    assert main(["data", "stats", str(src), "--model", "none", "--json", "--html", str(tmp_path / "b.html")]) == 0
    out = capsys.readouterr().out
    d = json.loads(out[: out.rindex("}") + 1])
    assert d["examples"] == 200 and len(d["labels"]) == 77 and d["lengths"]["system"]["min"] == d["lengths"]["system"]["max"]
    assert (tmp_path / "b.html").stat().st_size > 20000
