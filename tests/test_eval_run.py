"""``evaluate()`` and the ``tailored eval`` / ``tailored report`` commands on a tiny trained run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tailored.errors import DataError
from tailored.eval.tasks import detect_task, read_test_set


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cls_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    labels = ["refund", "billing", "login"]
    return [{"messages": [{"role": "system", "content": "Label the message."},
                          {"role": "user", "content": f"message {i} about {labels[i % 3]}"},
                          {"role": "assistant", "content": labels[i % 3]}]} for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def run(home, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tailored.train.run import train

    w = tmp_path_factory.mktemp("evalrun")
    data, val, test = _write(w / "train.jsonl", _cls_rows(30)), _write(w / "val.jsonl", _cls_rows(6, 30)), _write(w / "test.jsonl", _cls_rows(9, 40))
    result = train(data=str(data), validation=str(val), model=str(tiny_model_dir), output=str(w / "run"), max_steps=6,
                   batch_size=6, eval_every=2, max_seq_length=96, red_flags="curves", threads=1)
    return {"run": result.run_dir, "test": test, "dir": w}


def test_task_detection(tmp_path: Path, shared_data: Path) -> None:
    assert detect_task(shared_data / "banking77" / "validation.jsonl") == "classification"
    assert detect_task(shared_data / "text-to-sql" / "validation.jsonl") == "sql"
    assert detect_task(shared_data / "dolly-open-qa" / "validation.jsonl") == "generation"
    assert detect_task(shared_data / "forgetting-probe" / "validation.jsonl") == "choice"


def test_task_detection_without_shared_data(tmp_path: Path) -> None:
    assert detect_task(_write(tmp_path / "c.jsonl", _cls_rows(9))) == "classification"
    gen = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a long answer number {i}"}]}
           for i in range(9)]
    assert detect_task(_write(tmp_path / "g.jsonl", gen)) == "generation"
    test = read_test_set(tmp_path / "c.jsonl", limit=4)
    assert len(test.prompts) == 4 and test.prompts[0][-1]["role"] == "user" and test.references[0] == "refund"
    with pytest.raises(DataError, match="line 1"):
        read_test_set(_write(tmp_path / "bad.jsonl", [{"nope": 1}]))


def test_bad_test_files_are_clear_errors(tmp_path: Path) -> None:
    from tailored.eval.run import evaluate
    from tailored.eval.tasks import read_labels

    missing = tmp_path / "missing.jsonl"
    with pytest.raises(DataError, match="missing.jsonl: no such file"):
        detect_task(missing)
    with pytest.raises(DataError, match="missing.jsonl: no such file"):
        evaluate("smollm2", missing, baseline=None, probe=None, collapse=False, progress=False, save=False)
    rows = _cls_rows(6)
    bad_first = tmp_path / "bad_first.jsonl"
    bad_first.write_text("{oops\n" + "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="line 1: not valid JSON"):
        detect_task(bad_first)
    with pytest.raises(DataError, match="line 1"):
        read_test_set(bad_first)
    with pytest.raises(DataError, match="labels.txt: no such file"):
        read_labels(tmp_path / "labels.txt")
    (tmp_path / "labels.txt").write_text("refund\u2028billing\nlogin\n", encoding="utf-8")
    assert read_labels(tmp_path / "labels.txt") == ["refund\u2028billing", "login"]  # one label per \n-ended line


def test_test_sets_with_unicode_line_separators(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"message {i}\u2028about\u2029this\u0085one"},
                          {"role": "assistant", "content": ["refund", "billing", "login"][i % 3]}]} for i in range(9)]
    path = tmp_path / "sep.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert detect_task(path) == "classification"
    assert len(read_test_set(path).references) == 9


def test_evaluate_base_vs_tuned_and_cache(run: dict[str, Path]) -> None:
    from tailored.eval.run import evaluate

    t0 = time.time()
    report = evaluate(run["run"], run["test"], collapse=True, progress=False)
    first = time.time() - t0
    assert report["task"] == "classification"
    assert set(report["models"]) == {"tuned", "base"}
    m = report["models"]["tuned"]["metrics"]
    assert {"accuracy", "macro_f1", "weighted_f1", "macro_precision", "outside_label_set", "per_label", "most_confused"} <= set(m)
    assert len(report["models"]["tuned"]["answers"]) == 9 and not report["models"]["tuned"]["cached"]
    assert [f["name"] for f in report["red_flags"]] == ["overfitting", "forgetting", "mode_collapse"]
    assert report["side_by_side"] and {"prompt", "reference", "tuned", "base"} <= set(report["side_by_side"][0])
    assert list((run["run"] / "evals").glob("test-*.json"))  # kept for `tailored report`
    t0 = time.time()
    again = evaluate(run["run"], run["test"], collapse=True, progress=False)
    assert again["models"]["tuned"]["cached"] and again["models"]["base"]["cached"]
    assert again["models"]["tuned"]["answers"] == report["models"]["tuned"]["answers"]
    assert time.time() - t0 < first


def test_generation_task_reports_text_metrics_and_reference_loss(run: dict[str, Path]) -> None:
    from tailored.eval.run import evaluate

    report = evaluate(run["run"], run["test"], task="generation", baseline=None, probe=None, collapse=False,
                      use_cache=False, progress=False, max_new_tokens=4, save=False)
    m = report["models"]["tuned"]["metrics"]
    assert {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "length_ratio", "reference_loss", "perplexity"} <= set(m)
    assert m["perplexity"] > 1 and "base" not in report["models"]


def test_eval_and_report_commands(run: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from tailored.cli.main import main

    out_json, out_html = run["dir"] / "e.json", run["dir"] / "e.html"
    assert main(["eval", str(run["run"]), "--data", str(run["test"]), "--no-collapse", "--json", str(out_json),
                 "--html", str(out_html)]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "red flags:" in text and "forgetting" in text
    report = json.loads(out_json.read_text())
    assert report["task"] == "classification"
    page = out_html.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "Catastrophic forgetting" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert main(["report", str(run["run"]), "--html", str(run["dir"] / "r.html")]) == 0
    assert "Held-out evaluation" in (run["dir"] / "r.html").read_text()
    assert main(["report", str(run["dir"]), "--html", str(run["dir"] / "x.html")]) != 0  # not a run folder


def test_choice_task_on_a_base_model(home, tiny_model_dir: Path, tmp_path: Path) -> None:
    from tailored.eval.run import evaluate

    probe = _write(tmp_path / "mc.jsonl", [{"question": "Pick one", "choices": ["refund", "login"], "answer_index": 0}] * 3)
    report = evaluate(str(tiny_model_dir), probe, probe=None, collapse=False, progress=False)
    assert report["task"] == "choice" and report["models"]["tuned"]["metrics"]["n"] == 3
    assert report["baseline"] is None
