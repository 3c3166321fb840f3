"""``data convert``: every format round-trips through every other; chat output passes ``data check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.check import check_file
from tailored.data.convert import TARGETS, convert_file
from tailored.data.readers import read_records
from tailored.errors import DataError


def _chat_rows(n: int, system: bool = True, turns: int = 1) -> list[dict]:
    rows = []
    for i in range(n):
        msgs = [{"role": "system", "content": f"You answer question {i % 3}."}] if system else []
        for t in range(turns):
            msgs += [{"role": "user", "content": f"What is {i} plus {t}?"}, {"role": "assistant", "content": f"{i + t}, café ✓"}]
        rows.append({"messages": msgs})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _messages(path: Path) -> list[list[dict]]:
    return [ex.messages for ex in read_records(path).examples]


@pytest.mark.parametrize("target", TARGETS)
def test_round_trip_through_every_format(tmp_path: Path, target: str) -> None:
    src = _write(tmp_path / "src.jsonl", _chat_rows(12, system=target != "prompt-completion"))
    assert convert_file(src, tmp_path / "x.jsonl", to=target) == 12
    detected = read_records(tmp_path / "x.jsonl").format
    assert detected == target.replace("-", "_")
    convert_file(tmp_path / "x.jsonl", tmp_path / "back.jsonl", to="chat")
    assert _messages(tmp_path / "back.jsonl") == _messages(src)
    assert not check_file(tmp_path / "back.jsonl").has_errors


def test_multi_turn_keeps_through_sharegpt_and_is_refused_by_alpaca(tmp_path: Path) -> None:
    src = _write(tmp_path / "src.jsonl", _chat_rows(10, turns=3))
    convert_file(src, tmp_path / "s.jsonl", to="sharegpt")
    convert_file(tmp_path / "s.jsonl", tmp_path / "back.jsonl", to="chat")
    assert _messages(tmp_path / "back.jsonl") == _messages(src)
    with pytest.raises(DataError, match="line 1"):
        convert_file(src, tmp_path / "a.jsonl", to="alpaca")
    with pytest.raises(DataError, match="system prompt"):
        convert_file(_write(tmp_path / "one.jsonl", _chat_rows(10)), tmp_path / "p.jsonl", to="prompt-completion")


def test_system_prompt_is_set_and_alpaca_input_is_merged(tmp_path: Path) -> None:
    rows = [{"instruction": "Translate to French", "input": f"cat number {i}", "output": f"chat numéro {i}"} for i in range(10)]
    src = _write(tmp_path / "a.jsonl", rows)
    convert_file(src, tmp_path / "c.jsonl", to="chat", system="Be brief.")
    out = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()]
    assert out[3]["messages"] == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Translate to French\n\ncat number 3"},
                                  {"role": "assistant", "content": "chat numéro 3"}]
    report = check_file(tmp_path / "c.jsonl")
    assert not report.has_errors and report.format == "chat"


def test_invalid_input_is_refused_not_dropped(tmp_path: Path) -> None:
    src = _write(tmp_path / "src.jsonl", _chat_rows(5))
    with open(src, "a") as f:
        f.write('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    with pytest.raises(DataError, match="line 6"):
        convert_file(src, tmp_path / "x.jsonl", to="alpaca")


def test_real_dataset_to_every_format_and_back(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_data / "text-to-sql" / "train.jsonl"
    for target in ("alpaca", "sharegpt"):
        assert main(["data", "convert", str(src), "-o", str(tmp_path / f"{target}.jsonl"), "--to", target]) == 0
        assert main(["data", "convert", str(tmp_path / f"{target}.jsonl"), "-o", str(tmp_path / "back.jsonl"), "--to", "chat"]) == 0
        assert _messages(tmp_path / "back.jsonl") == _messages(src)
    assert "wrote 1000 examples" in capsys.readouterr().out
