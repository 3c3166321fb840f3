"""Tables into examples: CSV/TSV (csv module), XLSX (openpyxl), Parquet/Arrow (pyarrow), datasets folders.

Every file is written by the library that writes such files in real life; every bad row is named by
its row (as the sheet shows it) and column; no valid row is lost; banking77's CSV converts to exactly the
shipped chat files; training reads a CSV through the same readers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.check import check_file
from tailored.data.convert import convert_file
from tailored.data.imports import ImportOptions, import_layout, using
from tailored.data.readers import read_records
from tailored.errors import DataError

SYSTEM = "You answer support tickets."


def chat(user: str, answer: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def where(problems) -> dict[str, list[tuple[int, str | None]]]:
    out: dict[str, list[tuple[int, str | None]]] = {}
    for p in problems:
        out.setdefault(p.category, []).append((p.line, p.column))
    return out


def tickets_csv(path: Path, encoding: str = "utf-8-sig", delimiter: str = ",") -> Path:
    """A CSV as Excel saves one: BOM, CRLF, quoted cells with newlines, quotes and delimiters inside."""
    rows = [
        ["subject", "body", "reply"],
        ["Login", 'I cannot log in.\nIt says "bad password".', "Reset it from the login page, then try again."],
        ["Billing", "charged twice, once on the 3rd", ""],                     # row 3: no answer
        ["", "", ""],                                                          # row 4: blank (skipped, counted)
        ["Refund", "where is my refund; it's been 2 weeks", "Refunds take 5-10 days.\nI have checked: it is on its way."],
        ["", "", "An answer to nothing"],                                      # row 6: no prompt
        ["Café", "Ça ne marche pas ✓", "Désolé — voici la solution."],
    ]
    with open(path, "w", encoding=encoding, newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)  # the csv module's default dialect is Excel's
    return path


TEMPLATE = "Ticket: {subject}\n{body}"
GOOD = {
    2: chat('Ticket: Login\nI cannot log in.\nIt says "bad password".', "Reset it from the login page, then try again."),
    5: chat("Ticket: Refund\nwhere is my refund; it's been 2 weeks", "Refunds take 5-10 days.\nI have checked: it is on its way."),
    7: chat("Ticket: Café\nÇa ne marche pas ✓", "Désolé — voici la solution."),
}


def test_csv_with_bom_quotes_and_multiline_cells(tmp_path: Path) -> None:
    path = tickets_csv(tmp_path / "tickets.csv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfsubject,body,reply\r\n")
    with pytest.raises(DataError, match="which column holds the prompt") as err:
        read_records(path)
    assert "subject, body, reply" in err.value.message and "--prompt-column" in err.value.hint
    opts = ImportOptions(prompt_template=TEMPLATE, answer_column="reply")
    with using(opts):
        read = read_records(path)
    assert read.format == "csv" and read.n_lines == 5
    assert {ex.line: ex.messages for ex in read.examples} == GOOD  # every valid row, exactly
    assert where(read.problems) == {"empty_cell": [(3, "reply"), (6, None)]}
    no_answer, no_prompt = read.problems
    assert no_answer.where == "row 3, column 'reply'" and no_answer.severity == "error"
    assert no_prompt.where == "row 6" and "'subject', 'body'" in no_prompt.message and no_prompt.severity == "error"
    assert read.layout.describe().splitlines()[0].endswith("5 rows; columns: subject, body, reply")
    assert "1 blank row(s) skipped" in read.layout.describe() and "utf-8 with BOM" in read.layout.detail


def test_convert_prints_the_layout_refuses_bad_rows_and_dry_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tickets_csv(tmp_path / "tickets.csv")
    out = tmp_path / "train.jsonl"
    args = ["data", "convert", str(path), "-o", str(out), "--to", "chat", "--prompt-template", r"Ticket: {subject}\n{body}",
            "--answer-column", "reply", "--system", SYSTEM]
    assert main(args) == 1 and not out.exists()
    said = capsys.readouterr()
    assert "prompt <- template 'Ticket: {subject}\\n{body}'" in said.out and "answer <- column 'reply'" in said.out
    assert "row 3, column 'reply': empty" in said.err and "row 6" in said.err
    # the fixed sheet converts; --dry-run shows the first examples as chat JSON and writes nothing
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines(keepends=True)))
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows([r for i, r in enumerate(rows, start=1) if i not in (3, 6)])
    assert main([*args, "--dry-run", "--show", "1"]) == 0 and not out.exists()
    said = capsys.readouterr().out
    shown = json.loads(said[said.index("\n{") + 1: said.index("\n}") + 2])
    assert shown["messages"] == chat('Ticket: Login\nI cannot log in.\nIt says "bad password".',
                                     "Reset it from the login page, then try again.", SYSTEM)
    assert "dry run: 3 examples" in said and "nothing was written" in said
    assert main(args) == 0 and "wrote 3 examples" in capsys.readouterr().out
    written = [json.loads(x)["messages"] for x in out.read_text(encoding="utf-8").splitlines()]
    assert written == [[{"role": "system", "content": SYSTEM}] + m for m in GOOD.values()]
    assert not check_file(out, min_examples=1).has_errors


def test_other_delimiters_and_encodings(tmp_path: Path) -> None:
    opts = ImportOptions(prompt_template=TEMPLATE, answer_column="reply")
    # Excel on a European Windows: semicolons, cp1252
    rows = [["subject", "body", "reply"], ["Café", "Ça, ne marche pas", "Désolé; voici"], ["Login", "x\ny", "z"]]
    semi = tmp_path / "semi.csv"
    with open(semi, "w", encoding="cp1252", newline="") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    with pytest.raises(DataError, match="line 2 is not utf-8") as err:
        read_records(semi, format="csv")
    assert "--encoding" in err.value.hint
    with using(ImportOptions(**{**opts.__dict__, "encoding": "cp1252"})):
        read = read_records(semi)
    assert read.layout.detail == "delimiter ';', cp1252" and not read.problems
    assert read.examples[0].messages == chat("Ticket: Café\nÇa, ne marche pas", "Désolé; voici")
    tsv = tmp_path / "t.tsv"
    with open(tsv, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t").writerows(rows)
    with using(opts):
        read = read_records(tsv)
    assert read.format == "tsv" and [ex.messages for ex in read.examples][1] == chat("Ticket: Login\nx\ny", "z")
    pipes = tmp_path / "p.txt"
    pipes.write_text("question|answer\nwhat, really?|yes\n", encoding="utf-8")
    with using(ImportOptions(delimiter="pipe")):
        assert read_records(pipes, format="csv").examples[0].messages == chat("what, really?", "yes")


def test_broken_quotes_and_ragged_rows_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('question,answer\n"fine","ok"\nhello, there,general\n"a "quoted" word",x\nq4,a4\n"never closed,x\nq6,a6\n',
                    encoding="utf-8")
    read = read_records(path)
    assert [ex.messages for ex in read.examples] == [chat("fine", "ok"), chat("q4", "a4")]
    assert where(read.problems) == {"bad_row": [(3, None)], "bad_quoting": [(4, None), (6, None)]}
    text = " ".join(p.message for p in read.problems)
    assert "3 cells, the header has 2" in text and "never closes" in text and "line 6 of the file" in text
    long = tmp_path / "long.csv"  # over the csv module's default 128 KiB field limit
    long.write_text('prompt,answer\n"' + "word " * 40000 + '",ok\n', encoding="utf-8")
    assert len(read_records(long).examples[0].messages[0]["content"]) == 200000


def test_default_columns_system_column_and_unknown_columns(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["id", "Question", "Response", "system"], [1, "q1", "a1", "Be brief."], [2, "q2", "a2", ""]])
    with using(ImportOptions(system="Default.")):
        read = read_records(path)
    assert [ex.messages for ex in read.examples] == [chat("q1", "a1", "Be brief."), chat("q2", "a2", "Default.")]
    assert read.layout.prompt == "column 'Question'" and read.layout.answer == "column 'Response'"
    with using(ImportOptions(answer_column="respnse")), pytest.raises(DataError, match="no column 'respnse'") as err:
        read_records(path)
    assert "did you mean 'Response'" in err.value.hint
    # instruction + input + output (an alpaca sheet): input joined when not empty, like the alpaca reader
    alp = tmp_path / "alpaca.csv"
    with open(alp, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["instruction", "input", "output"], ["Translate", "cat", "chat"], ["Say hi", "", "hi"]])
    assert [ex.messages for ex in read_records(alp).examples] == [chat("Translate\n\ncat", "chat"), chat("Say hi", "hi")]


def test_xlsx_written_with_openpyxl(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    notes = wb.active
    notes.title = "Notes"
    notes["A1"] = "not the data"
    ws = wb.create_sheet("Tickets")
    ws.append(["question", "answer", "agent"])
    ws.append(["How do I reset?\nI tried twice.", "Use the link.", "ann"])
    ws.append(["What is 6 x 7?", 42, "bob"])           # a number cell
    ws.append(["Where is my order?", None, "ann"])      # row 4: empty answer
    ws.append([None, None, None])                       # row 5: blank
    ws.append(["Rate?", 0.5, "bob"])
    path = tmp_path / "tickets.xlsx"
    wb.save(path)
    with pytest.raises(DataError, match="which column holds the prompt"):
        read_records(path)  # the first sheet is Notes
    for sheet in ("Tickets", "2"):
        with using(ImportOptions(sheet=sheet)):
            read = read_records(path)
        assert read.format == "xlsx" and "sheet 'Tickets', 2 of 2: Notes, Tickets" in read.layout.describe()
        assert {ex.line: ex.messages for ex in read.examples} == {
            2: chat("How do I reset?\nI tried twice.", "Use the link."), 3: chat("What is 6 x 7?", "42"),
            6: chat("Rate?", "0.5")}
        assert [(p.where, p.category) for p in read.problems] == [("row 4, column 'answer'", "empty_cell")]
        assert "cell B4" in read.problems[0].message
    with using(ImportOptions(sheet="Sheet9")), pytest.raises(DataError, match="no sheet 'Sheet9'; the sheets are: Notes, Tickets"):
        read_records(path)


def _pyarrow():
    return pytest.importorskip("pyarrow")


ROWS = {"prompt": ["p1", "p2", None, "p4"], "completion": ["c1", "c2", "c3", None], "topic": ["a", "b", "c", "d"]}


def test_parquet_and_arrow_written_with_pyarrow(tmp_path: Path) -> None:
    pa = _pyarrow()
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    table = pa.table(ROWS)
    pq.write_table(table, tmp_path / "d.parquet")
    feather.write_feather(table, tmp_path / "d.feather")  # Arrow IPC file
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)  # Arrow IPC stream (what datasets writes)
    for name in ("d.parquet", "d.feather", "d.arrow"):
        read = read_records(tmp_path / name)
        assert [ex.messages for ex in read.examples] == [chat("p1", "c1"), chat("p2", "c2")], name
        assert [p.where for p in read.problems] == ["row 3, column 'prompt'", "row 4, column 'completion'"]
    with using(ImportOptions(prompt_template="[{topic}] {prompt}", answer_column="completion")):
        read = read_records(tmp_path / "d.parquet")
    assert read.examples[1].messages == chat("[b] p2", "c2")
    assert [p.severity for p in read.problems] == ["warning", "error"]  # row 3 renders "[c] ": its prompt cell is empty


def save_to_disk_folder(folder: Path, table, splits: tuple[str, ...] = ()) -> Path:
    """The folder ``Dataset.save_to_disk`` writes (datasets 2.x/3.x): Arrow IPC stream shards + state.json."""
    pa = _pyarrow()
    if splits:
        folder.mkdir(parents=True)
        (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
        for split in splits:
            save_to_disk_folder(folder / split, table)
        return folder
    folder.mkdir(parents=True)
    half = table.num_rows // 2
    names = []
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        names.append(f"data-{i:05d}-of-00002.arrow")
        with pa.OSFile(str(folder / names[-1]), "wb") as sink, pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names], "_fingerprint": "x",
                                                   "_format_type": None, "_split": None}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {k: {"dtype": "string", "_type": "Value"}
                                                                       for k in table.column_names}}))
    return folder


def test_datasets_save_to_disk_folders(tmp_path: Path) -> None:
    pa = _pyarrow()
    table = pa.table(ROWS)
    folder = save_to_disk_folder(tmp_path / "ds", table)
    assert import_layout(folder) == "datasets"
    read = read_records(folder)
    assert [ex.messages for ex in read.examples] == [chat("p1", "c1"), chat("p2", "c2")]
    assert [p.line for p in read.problems] == [3, 4] and "2 Arrow file(s)" in read.layout.detail
    both = save_to_disk_folder(tmp_path / "dd", table, splits=("train", "test"))
    assert "split 'train' of train, test" in read_records(both).layout.detail
    with using(ImportOptions(split="dev")), pytest.raises(DataError, match="splits train, test"):
        read_records(both)
    # a chat dataset saved to disk reads as chat records
    msgs = [chat(f"q{i}", f"a{i}") for i in range(4)]
    chat_folder = save_to_disk_folder(tmp_path / "chat", pa.table({"messages": msgs}))
    assert [ex.messages for ex in read_records(chat_folder).examples] == msgs


def test_training_reads_a_table_through_the_same_readers(tiny_model_dir: Path, tmp_path: Path) -> None:
    import tailored

    path = tmp_path / "train.csv"
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows([["question", "answer"]] + [[f"what is {i} plus {i}?", str(2 * i)] for i in range(16)])
    result = tailored.train(data=str(path), model=str(tiny_model_dir), output=str(tmp_path / "run"), batch_size=8,
                            max_steps=2, threads=1, red_flags="off")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["data"]["train"]["format"] == "csv" and manifest["data"]["train"]["examples"] == 16


def test_banking77_csv_converts_to_the_shipped_chat_files(shared_data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_data / "banking77"
    system = json.loads((folder / "SOURCE.json").read_text())["system_prompt"]
    for split in ("train", "validation"):
        out = tmp_path / f"{split}.jsonl"
        assert main(["data", "convert", str(folder / "plain" / f"{split}.csv"), "-o", str(out), "--to", "chat",
                     "--system", system]) == 0
        assert out.read_bytes() == (folder / f"{split}.jsonl").read_bytes()
        said = capsys.readouterr().out
        assert "prompt <- column 'text'" in said and "answer <- column 'label'" in said
    # the JSONL twin ({"text", "label"}) reads as a table once a column is named
    n = convert_file(folder / "plain" / "train.jsonl", tmp_path / "j.jsonl", to="chat", system=system,
                     options=ImportOptions(answer_column="label"))
    assert n == 1000 and (tmp_path / "j.jsonl").read_bytes() == (folder / "train.jsonl").read_bytes()
    assert read_records(folder / "plain" / "train.jsonl").format == "text"  # without a column option: as before


def test_data_check_on_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tickets_csv(tmp_path / "tickets.csv")
    code = main(["data", "check", str(path), "--model", "none", "--prompt-template", r"Ticket: {subject}\n{body}",
                 "--answer-column", "reply", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["layout"]["kind"] == "csv" and report["valid_examples"] == 3
    assert report["problems"]["empty_cell"][0] == {"line": 3, "message": report["problems"]["empty_cell"][0]["message"],
                                                   "severity": "error", "unit": "row", "column": "reply"}


def test_clean_and_split_ask_for_a_conversion_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """They copy JSONL lines unchanged, so a table would come out as CSV lines in a .jsonl: refused, with the fix."""
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(20)), encoding="utf-8")
    assert main(["data", "split", str(path), "-o", str(tmp_path / "splits")]) == 1
    assert "tailored data convert" in capsys.readouterr().err and not (tmp_path / "splits").exists()
    assert main(["data", "clean", str(path), "-o", str(tmp_path / "c.jsonl")]) == 1 and not (tmp_path / "c.jsonl").exists()
    capsys.readouterr()
    assert main(["data", "stats", str(path), "--model", "none", "--json"]) == 0  # reads examples only: fine
    assert json.loads(capsys.readouterr().out)["examples"] == 20
