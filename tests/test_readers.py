"""Every validation category is caught, on the right line; every format reads into chat records."""

from __future__ import annotations

import json
from pathlib import Path

from tailored.data.check import check_file
from tailored.data.readers import read_records

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_every_category_has_its_line(tmp_path):
    bad = [
        GOOD,                                                                     # 1 ok
        "{not json",                                                              # 2 invalid_json
        {"messages": "nope"},                                                     # 3 missing_messages_list
        {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]},  # 4 message_missing_key
        {"messages": [{"role": "user", "content": "x", "foo": 1}, {"role": "assistant", "content": "y"}]},  # 5 unrecognized key
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},  # 6 unrecognized_role
        {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},  # 7 missing_content
        {"messages": [{"role": "user", "content": "x"}]},                         # 8 no_assistant_message
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},  # 9 bad_weight
        [1, 2],                                                                   # 10 not_an_object
    ] + [GOOD] * 10
    report = check_file(write(tmp_path / "bad.jsonl", bad))
    by = {cat: [p.line for p in ps] for cat, ps in report.by_category().items()}
    assert by["invalid_json"] == [2]
    assert by["missing_messages_list"] == [3]
    assert by["message_missing_key"] == [4]
    assert by["message_unrecognized_key"] == [5]
    assert by["unrecognized_role"] == [6]
    assert by["missing_content"] == [7]
    assert by["no_assistant_message"] == [8]
    assert by["bad_weight"] == [9]
    assert by["not_an_object"] == [10]
    assert report.has_errors
    text = report.render()
    assert "line 6: messages[0] has role 'robot'" in text and "FAILED" in text
    assert report.to_dict()["problems"]["bad_weight"][0]["line"] == 9


def test_counts_duplicates_and_small_sets(tmp_path):
    report = check_file(write(tmp_path / "few.jsonl", [GOOD] * 3))
    cats = report.by_category()
    assert cats["too_few_examples"][0].severity == "error"
    assert cats["exact_duplicate"][0].line == 2
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]} for i in range(20)]
    report = check_file(write(tmp_path / "twenty.jsonl", rows))
    assert not report.has_errors and report.by_category()["few_examples"][0].severity == "warning"


def test_formats_are_detected_and_converted(tmp_path):
    cases = {
        "prompt_completion": {"prompt": "p", "completion": "c"},
        "alpaca": {"instruction": "do", "input": "this", "output": "done", "system": "s"},
        "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        "text": {"text": "plain words"},
        "preference": {"input": {"messages": [{"role": "user", "content": "q"}]},
                       "preferred_output": [{"role": "assistant", "content": "good"}],
                       "non_preferred_output": [{"role": "assistant", "content": "bad"}]},
    }
    for fmt, row in cases.items():
        result = read_records(write(tmp_path / f"{fmt}.jsonl", [row]))
        assert result.format == fmt and not result.problems, (fmt, result.problems)
    alpaca = read_records(tmp_path / "alpaca.jsonl").examples[0]
    assert alpaca.messages == [{"role": "system", "content": "s"}, {"role": "user", "content": "do\n\nthis"},
                               {"role": "assistant", "content": "done"}]
    assert read_records(tmp_path / "sharegpt.jsonl").examples[0].messages[1] == {"role": "assistant", "content": "a"}


def test_mixed_formats_are_flagged_not_dropped(tmp_path):
    result = read_records(write(tmp_path / "mixed.jsonl", [GOOD, {"prompt": "p", "completion": "c"}]))
    assert result.format == "chat" and [p.line for p in result.problems] == [2]
    assert result.problems[0].category == "format_mismatch"


def _with(user: object, answer: object = "fine") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_content_parts_must_hold_text(tmp_path):
    result = read_records(write(tmp_path / "parts.jsonl", [
        _with([{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]),  # 1 ok
        _with([{"type": "text", "text": None}]),                                        # 2
        _with([{"type": "text"}]),                                                      # 3
        _with([{"type": "text", "text": 5}]),                                           # 4
        _with([{"type": "image_url", "image_url": {"url": "x"}}]),                      # 5
        _with(["just a string"]),                                                       # 6
    ]))
    assert [ex.line for ex in result.examples] == [1] and result.examples[0].messages[0]["content"] == "hello there"
    by_line = {p.line: p.message for p in result.problems}
    assert sorted(by_line) == [2, 3, 4, 5, 6]
    assert by_line[2] == "messages[0].content[0].text must be a string, got null"
    assert by_line[3].endswith("got nothing") and by_line[4].endswith("got int")
    assert "only text parts" in by_line[5] and "only text parts" in by_line[6]


def test_empty_assistant_content_lists_are_refused(tmp_path):
    from tailored.data.clean import clean_file

    rows = [_with(f"question {i}", f"answer {i}") for i in range(10)] + [
        _with("Tell me something.", []),                                                       # 11
        _with("Tell me something.", [{"type": "text", "text": ""}]),                           # 12
        _with("Tell me something.", [{"type": "text", "text": "  "}, {"type": "text", "text": "\n"}]),  # 13
        _with("Tell me something.", [{"type": "text", "text": "Real answer."}]),               # 14 ok
    ]
    path = write(tmp_path / "empty.jsonl", rows)
    report = check_file(path)
    assert {p.line: p.message for p in report.problems if p.severity == "error"} == {
        n: "messages[1].content is empty" for n in (11, 12, 13)}
    assert [ex.line for ex in report.examples] == list(range(1, 11)) + [14]
    clean = clean_file(path, tmp_path / "c.jsonl", near_threshold=1.0)
    assert [(f.line, f.reason) for f in clean.flags] == [(n, "empty_answer") for n in (11, 12, 13)]
