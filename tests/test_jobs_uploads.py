"""``POST /v1/files`` (purpose fine-tune) converts tables and labelling exports on the server, through the SDK.

A CSV with default column names becomes chat JSONL that a job trains on; XLSX, Parquet, Prodigy and
Label Studio uploads convert the same way; a file with bad rows is ``error`` with the rows and columns named in
``status_details``; the uploaded bytes are kept beside the converted file.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tailored.serve.server import start

KEY = "sk-uploads"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, home: None):
    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys.write_text(json.dumps({"keys": [{"key": KEY, "project": "team-u"}]}))
    srv = start(base=str(tiny_model_dir), api_keys=str(keys), max_tokens=16)
    yield srv
    srv.stop()


def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, _strict_response_validation=True)


WORDS = ("apple", "river", "stone", "cloud", "green", "night", "table", "north", "light", "sugar", "paper", "music")


def csv_bytes(rows: list[list[Any]]) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows(rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def test_a_csv_upload_is_converted_and_trains(server: Any) -> None:
    c = client(server)
    rows = [["question", "answer", "system"]] + [[f"say {w}\ntwice", f"{w} {w}", "Repeat."] for w in WORDS]
    up = c.files.create(file=("words.csv", csv_bytes(rows)), purpose="fine-tune")
    assert up.status == "processed" and up.status_details is None and up.filename == "words.csv"
    content = [json.loads(x) for x in c.files.content(up.id).text.splitlines()]
    assert content[0] == {"messages": [{"role": "system", "content": "Repeat."}, {"role": "user", "content": "say apple\ntwice"},
                                       {"role": "assistant", "content": "apple apple"}]}
    assert len(content) == len(WORDS) and up.bytes == len(c.files.content(up.id).content)
    job = c.fine_tuning.jobs.create(model="model", training_file=up.id, hyperparameters={"n_epochs": 1})
    deadline = time.monotonic() + 240
    while (job := c.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job.status
        time.sleep(0.3)
    assert job.status == "succeeded", job.error


def test_bad_rows_are_named_in_status_details(server: Any) -> None:
    c = client(server)
    rows = [["prompt", "completion"], ["q1", "a1"], ["q2", ""], ["", "a3"], ["q4", "a4"]]
    bad = c.files.create(file=("bad.csv", csv_bytes(rows)), purpose="fine-tune")
    assert bad.status == "error"
    assert "row 3, column 'completion': empty" in bad.status_details and "row 4, column 'prompt': empty" in bad.status_details
    assert "prompt <- column 'prompt'" in bad.status_details and "answer <- column 'completion'" in bad.status_details
    with pytest.raises(openai.BadRequestError) as err:
        c.fine_tuning.jobs.create(model="model", training_file=bad.id)
    assert err.value.code == "invalid_file_format"
    unknown = c.files.create(file=("cols.csv", csv_bytes([["a", "b", "c"], ["1", "2", "3"]])), purpose="fine-tune")
    assert unknown.status == "error" and "which column holds the prompt and answer" in unknown.status_details
    assert "prompt/question" in unknown.status_details  # the defaults are said


def test_xlsx_parquet_and_prodigy_uploads(server: Any, tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    c = client(server)
    wb = openpyxl.Workbook()
    wb.active.append(["input", "output"])
    for w in WORDS:
        wb.active.append([f"say {w}", w])
    wb.save(tmp_path / "w.xlsx")
    pq.write_table(pa.table({"text": [f"say {w}" for w in WORDS], "label": list(WORDS)}), tmp_path / "w.parquet")
    prodigy = "".join(json.dumps({"text": f"say {w}", "label": w, "answer": "reject" if i == 0 else "accept",
                                  "_input_hash": i, "_task_hash": 100 + i}) + "\n" for i, w in enumerate(WORDS))
    (tmp_path / "w.jsonl").write_text(prodigy)
    studio = [{"id": i, "data": {"text": f"say {w}"}, "annotations": [
        {"id": i, "completed_by": 1, "was_cancelled": False, "result": [
            {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [w]}}]}]}
        for i, w in enumerate(WORDS, start=1)]
    (tmp_path / "w.json").write_text(json.dumps(studio))
    for name, n in (("w.xlsx", 12), ("w.parquet", 12), ("w.jsonl", 11), ("w.json", 12)):
        up = c.files.create(file=tmp_path / name, purpose="fine-tune")
        assert up.status == "processed", up.status_details
        lines = c.files.content(up.id).text.splitlines()
        assert len(lines) == n and json.loads(lines[-1])["messages"][-1] == {"role": "assistant", "content": "music"}
    # a plain chat JSONL is stored as uploaded, as before
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n"
    up = c.files.create(file=("chat.jsonl", chat.encode()), purpose="fine-tune")
    assert up.status == "processed" and c.files.content(up.id).text == chat


def test_the_uploaded_bytes_are_kept_and_go_with_the_file(tmp_path: Path) -> None:
    from tailored.jobs.files import Files
    from tailored.jobs.store import Store

    files = Files(Store(tmp_path / "jobs.sqlite"), tmp_path / "files")
    data = csv_bytes([["prompt", "answer"], ["q", "a"]])
    up = files.add("p", "one.csv", "fine-tune", data)
    assert up["status"] == "processed"
    kept = list((tmp_path / "files").rglob("*.source.csv"))
    assert len(kept) == 1 and kept[0].read_bytes() == data
    assert files.content("p", up["id"]).read_text() == json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
    files.delete("p", up["id"])
    assert not [f for f in (tmp_path / "files").rglob("*") if f.is_file() and ".incoming" not in f.parts]
