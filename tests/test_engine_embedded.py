"""The demo's JSON task on the embedded model (slow): held to the triage schema, every answer of the base
validates, through `tailored chat` and `tailored eval`."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tailored.cli.main import main
from tailored.data.jsonl import read_json_rows
from tailored.demo import example_file, triage_schema

pytestmark = pytest.mark.slow


def test_triage_json_through_chat_and_eval(smollm2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = triage_schema(read_json_rows(example_file("triage_train.jsonl")))
    path = tmp_path / "triage.schema.json"
    path.write_text(json.dumps(schema))
    assert main(["chat", "smollm2", "--system", "Triage the support ticket. Answer with JSON only.", "--prompt",
                 "My parcel never arrived and I need it tomorrow!", "--json-schema", str(path)]) == 0
    jsonschema.validate(json.loads(capsys.readouterr().out), schema)

    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in read_json_rows(example_file("triage_validation.jsonl"))[:3]))
    report = tmp_path / "report.json"
    assert main(["eval", "smollm2", "--data", str(test), "--json-schema", str(path), "--baseline", "none",
                 "--probe", "none", "--no-collapse", "--no-cache", "--max-new-tokens", "24", "--json", str(report)]) == 0
    tuned = json.loads(report.read_text())["models"]["tuned"]
    assert tuned["metrics"]["valid_json_rate"] == 1.0
    for answer in tuned["answers"]:
        jsonschema.validate(json.loads(answer), schema)
