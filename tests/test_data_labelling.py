"""Labelling tools both ways: Label Studio (JSON and JSON-MIN) and Prodigy in; tasks with predictions out.

The exports are written in the shapes Label Studio 1.x and Prodigy 1.x write (neither tool is installed
here): annotations with ``completed_by``, ``was_cancelled``, ``result`` items of ``choices``/``textarea``;
JSON-MIN with one flat object per annotation; Prodigy lines with ``answer``, ``_input_hash``,
``_task_hash``, ``_annotator_id``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.check import check_file
from tailored.data.imports import ImportOptions, using
from tailored.data.labelling import export_for_labelling
from tailored.data.readers import read_records
from tailored.errors import DataError

PEOPLE = {1: "alice@example.com", 2: "bob@example.com", 3: "carol@example.com"}


def chat(user: str, answer: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def annotation(ann_id: int, who: int, choice: str | None = None, text: str | None = None, *, cancelled: bool = False,
               ground_truth: bool = False) -> dict:
    result = []
    if choice is not None:
        result.append({"id": f"r{ann_id}", "type": "choices", "value": {"choices": [choice]}, "origin": "manual",
                       "to_name": "text", "from_name": "sentiment"})
    if text is not None:
        result.append({"id": f"t{ann_id}", "type": "textarea", "value": {"text": [text]}, "origin": "manual",
                       "to_name": "text", "from_name": "reply"})
    return {"id": ann_id, "completed_by": who, "result": [] if cancelled else result, "was_cancelled": cancelled,
            "ground_truth": ground_truth, "created_at": "2026-01-05T10:00:00.000000Z",
            "updated_at": "2026-01-05T10:00:00.000000Z", "lead_time": 3.2, "task": None, "project": 1,
            "created_username": f"{PEOPLE[who]}, {who}", "prediction": {}, "result_count": len(result)}


def task(task_id: int, text: str, *annotations: dict) -> dict:
    return {"id": task_id, "annotations": list(annotations), "file_upload": "reviews.csv", "drafts": [], "predictions": [],
            "data": {"text": text}, "meta": {}, "created_at": "2026-01-05T09:00:00.000000Z",
            "updated_at": "2026-01-05T10:00:00.000000Z", "inner_id": task_id, "total_annotations": len(annotations),
            "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0, "project": 1}


def sentiment_export(path: Path) -> Path:
    tasks = [
        task(11, "Great value, works well.", annotation(1, 1, "Positive"), annotation(2, 2, "Positive")),
        task(12, "Broke after a day.", annotation(3, 1, "Negative"), annotation(4, 2, "Neutral"),
             annotation(5, 3, "Negative")),                          # majority Negative, disagreement reported
        task(13, "It is a phone.", annotation(6, 1, "Neutral"), annotation(7, 2, "Positive")),  # a tie: error
        task(14, "Arrived late.", annotation(8, 1, "Negative"), annotation(9, 2, cancelled=True)),
        task(15, "Not labelled yet."),                              # warning, not trained
    ]
    path.write_text(json.dumps(tasks, indent=2))
    return path


def test_label_studio_two_annotators_who_disagree(tmp_path: Path) -> None:
    path = sentiment_export(tmp_path / "project-1-at-2026-01-05.json")
    read = read_records(path)
    assert read.format == "label-studio" and read.n_lines == 5
    assert {ex.line: ex.messages for ex in read.examples} == {
        11: chat("Great value, works well.", "Positive"), 12: chat("Broke after a day.", "Negative"),
        14: chat("Arrived late.", "Negative")}
    by = {(p.line, p.category): p for p in read.problems}
    assert by[(12, "annotators_disagree")].severity == "warning"
    assert "'Negative' by alice@example.com, carol@example.com; 'Neutral' by bob@example.com" in by[(12, "annotators_disagree")].message
    assert by[(13, "annotators_disagree")].severity == "error" and "--annotator" in by[(13, "annotators_disagree")].message
    assert by[(14, "cancelled_annotation")].severity == "warning" and by[(15, "not_annotated")].severity == "warning"
    assert by[(13, "annotators_disagree")].where == "task 13"
    text = read.layout.describe()
    assert "3 annotator(s): alice@example.com, bob@example.com, carol@example.com; they disagree on 2 task(s)" in text
    assert "answer <- control 'sentiment'" in text
    # one named annotator settles it (by email or by id)
    for who in ("bob@example.com", "2"):
        with using(ImportOptions(annotator=who)):
            picked = read_records(path)
        assert {ex.line: ex.assistant_text() for ex in picked.examples} == {11: "Positive", 12: "Neutral", 13: "Positive"}
        assert not [p for p in picked.problems if p.severity == "error"]
        assert {p.line for p in picked.problems if p.category == "not_annotated"} == {14, 15}


def test_label_studio_textarea_and_ground_truth(tmp_path: Path) -> None:
    tasks = [task(1, "Reset my password?", annotation(1, 1, "Positive", "Use the link in the email."),
                  annotation(2, 2, "Positive", "Click 'forgot password'.", ground_truth=True)),
             task(2, "Cancel my order", annotation(3, 1, "Negative", "Done: order cancelled."))]
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(tasks))
    with pytest.raises(DataError, match=r"which control holds the answer\? The controls are: sentiment \(choices\), reply \(textarea\)"):
        read_records(path)
    with using(ImportOptions(answer_column="reply", system="Be brief.")):
        read = read_records(path)
    assert [ex.messages for ex in read.examples] == [chat("Reset my password?", "Click 'forgot password'.", "Be brief."),
                                                    chat("Cancel my order", "Done: order cancelled.", "Be brief.")]
    assert [p.category for p in read.problems] == ["annotators_disagree"] and "ground-truth" in read.problems[0].message


def test_label_studio_json_min(tmp_path: Path) -> None:
    rows = []
    for t in json.loads(sentiment_export(tmp_path / "full.json").read_text()):
        for a in t["annotations"]:
            if a["was_cancelled"]:
                continue
            rows.append({"text": t["data"]["text"], "id": t["id"], "sentiment": a["result"][0]["value"]["choices"][0],
                         "annotator": a["completed_by"], "annotation_id": a["id"], "created_at": a["created_at"],
                         "updated_at": a["updated_at"], "lead_time": a["lead_time"]})
    path = tmp_path / "min.json"
    path.write_text(json.dumps(rows))
    read = read_records(path)
    assert read.format == "label-studio-min"
    assert {ex.line: ex.assistant_text() for ex in read.examples} == {11: "Positive", 12: "Negative", 14: "Negative"}
    assert [(p.line, p.severity) for p in read.problems if p.category == "annotators_disagree"] == [(12, "warning"), (13, "error")]
    with using(ImportOptions(annotator="1")):
        assert {ex.line: ex.assistant_text() for ex in read_records(path).examples} == {
            11: "Positive", 12: "Negative", 13: "Neutral", 14: "Negative"}


def prodigy_line(text: str, answer: str, *, label: str | None = None, who: str | None = None, **more) -> str:
    row = {"text": text, "_input_hash": hash(text) % 10**9, "_task_hash": hash((text, label)) % 10**9, **more,
           "_view_id": "classification", "answer": answer, "_timestamp": 1767600000}
    if label is not None:
        row["label"] = label
    if who:
        row["_annotator_id"] = row["_session_id"] = f"intents-{who}"
    return json.dumps(row)


def test_prodigy_accepts_rejects_and_ignores(tmp_path: Path) -> None:
    path = tmp_path / "intents.jsonl"
    path.write_text("\n".join([
        prodigy_line("where is my card?", "accept", label="card_arrival"),
        prodigy_line("my card never came", "reject", label="card_linking"),     # line 2: rejected, not trained
        prodigy_line("asdfgh", "ignore", label="card_arrival"),                 # line 3: ignored, not trained
        prodigy_line("top up failed", "accept", label="top_up_failed"),
        "{broken",                                                              # line 5: invalid JSON, an error
        prodigy_line("which currencies?", "accept", options=[{"id": "fiat_currency_support", "text": "Fiat"},
                                                             {"id": "exchange_rate", "text": "Rates"}],
                     accept=["fiat_currency_support"], _view_id="choice"),
    ]) + "\n")
    read = read_records(path)
    assert read.format == "prodigy"
    assert {ex.line: ex.messages for ex in read.examples} == {
        1: chat("where is my card?", "card_arrival"), 4: chat("top up failed", "top_up_failed"),
        6: chat("which currencies?", "fiat_currency_support")}
    assert [(p.line, p.category, p.severity) for p in read.problems] == [
        (5, "invalid_json", "error"), (2, "rejected", "warning"), (3, "ignored", "warning")]
    assert "label 'card_linking'" in read.problems[1].message
    assert "1 reject, 1 ignore" in read.layout.describe()
    report = check_file(path, min_examples=1)
    assert report.has_errors and "line 5: not valid JSON" in report.render()


def test_prodigy_several_annotators(tmp_path: Path) -> None:
    path = tmp_path / "review.jsonl"
    lines = [prodigy_line("q1", "accept", label="A", who="ann"), prodigy_line("q1", "accept", label="A", who="bob"),
             prodigy_line("q2", "accept", label="B", who="ann"), prodigy_line("q2", "reject", label="B", who="bob"),
             prodigy_line("q2", "reject", label="B", who="cat")]
    path.write_text("\n".join(lines) + "\n")
    read = read_records(path)
    assert [ex.messages for ex in read.examples] == [chat("q1", "A")]
    assert [(p.line, p.category, p.severity) for p in read.problems] == [
        (3, "annotators_disagree", "warning"), (3, "rejected", "warning")]
    with using(ImportOptions(annotator="ann")):
        assert [ex.messages for ex in read_records(path).examples] == [chat("q1", "A"), chat("q2", "B")]


def test_round_trip_through_label_studio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Model answers out as tasks with predictions; the labeller corrects one; back in as training examples."""
    src = tmp_path / "answers.jsonl"
    convs = [chat(f"question {i}?", f"model answer {i}", "Be kind.") for i in range(4)]
    convs.append([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                  {"role": "user", "content": "and then?"}, {"role": "assistant", "content": "then this"}])
    src.write_text("".join(json.dumps({"messages": m}) + "\n" for m in convs))
    out = tmp_path / "tasks.json"
    assert main(["data", "export-for-labelling", str(src), "--to", "label-studio", "-o", str(out),
                 "--model-version", "run-7"]) == 0
    said = capsys.readouterr().out
    assert "wrote 5 task(s)" in said and "tasks.label-config.xml" in said
    tasks = json.loads(out.read_text())
    config = (tmp_path / "tasks.label-config.xml").read_text()
    assert '<TextArea name="answer" toName="prompt"' in config and '<Text name="prompt" value="$prompt"/>' in config
    first = tasks[0]
    assert first["data"] == {"prompt": "question 0?", "system": "Be kind."} and first["meta"] == {"source_line": 1}
    assert first["predictions"][0]["model_version"] == "run-7"
    assert first["predictions"][0]["result"][0]["value"] == {"text": ["model answer 0"]}
    assert tasks[4]["data"]["messages"] == convs[4][:-1] and "[user] and then?" in tasks[4]["data"]["prompt"]
    # labelling in Label Studio: each submitted annotation starts from the prediction; task 2 is corrected
    export = []
    for i, t in enumerate(tasks, start=101):
        result = json.loads(json.dumps(t["predictions"][0]["result"]))
        if i == 102:
            result[0]["value"]["text"] = ["a better answer"]
        export.append({**t, "id": i, "annotations": [{"id": i, "completed_by": 1, "result": result, "was_cancelled": False,
                                                      "ground_truth": False}]})
    labelled = tmp_path / "export.json"
    labelled.write_text(json.dumps(export))
    back = tmp_path / "train.jsonl"
    assert main(["data", "convert", str(labelled), "-o", str(back), "--to", "chat"]) == 0
    got = [json.loads(x)["messages"] for x in back.read_text().splitlines()]
    expected = [list(m) for m in convs]
    expected[1] = chat("question 1?", "a better answer", "Be kind.")
    assert got == expected


def test_classification_round_trip_and_csv(tmp_path: Path) -> None:
    src = tmp_path / "preds.jsonl"
    labels = ["card_arrival", "top_up_failed", "card_arrival", "exchange_rate", "card_arrival", "top_up_failed"]
    src.write_text("".join(json.dumps({"messages": chat(f"q{i}", label)}) + "\n" for i, label in enumerate(labels)))
    done = export_for_labelling(src, tmp_path / "t.json", labels=["lost_card"])
    assert done.kind == "choices" and done.labels == ["card_arrival", "exchange_rate", "lost_card", "top_up_failed"]
    config = Path(done.config).read_text()
    assert '<Choices name="answer" toName="prompt" choice="single"' in config and '<Choice value="lost_card"/>' in config
    assert json.loads((tmp_path / "t.json").read_text())[0]["predictions"][0]["result"][0]["value"] == {"choices": ["card_arrival"]}
    # CSV: a labeller edits the answer column in a spreadsheet; it comes back through the table reader
    done = export_for_labelling(src, tmp_path / "review.csv", to="csv")
    assert done.tasks == 6 and (tmp_path / "review.csv").read_bytes().startswith(b"\xef\xbb\xbfid,prompt,answer,model_answer\r\n")
    with open(tmp_path / "review.csv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[2]["answer"] = "lost_card"
    with open(tmp_path / "review.csv", "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    back = read_records(tmp_path / "review.csv")
    assert [ex.assistant_text() for ex in back.examples] == [*labels[:2], "lost_card", *labels[3:]]
    assert back.layout.answer == "column 'answer'" and not back.problems
    with pytest.raises(DataError, match="line 1"):  # multi-turn does not fit a CSV row
        (tmp_path / "multi.jsonl").write_text(json.dumps({"messages": chat("a", "b") + chat("c", "d")}) + "\n")
        export_for_labelling(tmp_path / "multi.jsonl", tmp_path / "m.csv", to="csv")


def test_prodigy_lines_with_unicode_line_separators_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "intents.jsonl"
    texts = ["where is\u2028my card?", "top up\u2029failed", "which\u0085currencies?"]
    path.write_text("".join(prodigy_line(t, "accept", label="x").replace(json.dumps(t), json.dumps(t, ensure_ascii=False))
                            + "\n" for t in texts), encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, as ensure_ascii=False writes it
    read = read_records(path)
    assert read.format == "prodigy" and not read.problems
    assert [ex.messages[0]["content"] for ex in read.examples] == texts
