"""Reading table files into rows: CSV/TSV, XLSX, Parquet, Arrow, ``datasets.save_to_disk`` folders, JSON rows.

Parsers: Python's :mod:`csv` (quotes, multi-line cells, any delimiter; :class:`csv.Sniffer` guesses the
delimiter), openpyxl for XLSX, pyarrow for Parquet and Arrow (a ``save_to_disk`` folder is Arrow IPC
stream files listed in its ``state.json``: no ``datasets`` import, no hub). What the rows become is
:mod:`tailored.data.tables`' business.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from tailored.data.imports import ImportOptions, load_json
from tailored.data.jsonl import iter_objects
from tailored.data.records import Problem
from tailored.errors import DataError


def cell_text(value: Any) -> str:
    """A cell as the text a person sees in it ('' for empty, NaN and None)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


@dataclass
class Row:
    number: int
    cells: dict[str, Any]
    note: str = ""  # where else to find it (CSV: its lines in the file, when a cell spans several)


@dataclass
class Table:
    kind: str
    columns: list[str]
    rows: list[Row]
    detail: str = ""
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cell_ref: Callable[[int, str], str] | None = None  # XLSX: (row, column) -> "C7"
    unit: str = "row"  # what Row.number counts ("line" for JSONL rows)


def _header(values: Iterable[Any], blank_name: Callable[[int], str]) -> tuple[list[str], list[str]]:
    """Column names (blank ones named, repeated ones numbered) and notes about what was renamed."""
    names, notes, seen = [], [], {}
    for i, v in enumerate(values):
        name = cell_text(v).strip().lstrip("\ufeff")
        if not name:
            name = blank_name(i)
        if name in seen:
            seen[name] += 1
            new = f"{name}.{seen[name]}"
            notes.append(f"column {name!r} appears {seen[name]} times: the later one is {new!r}")
            name = new
        seen.setdefault(name, 1)
        names.append(name)
    return names, notes


# ---- CSV / TSV -------------------------------------------------------------------------------
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode(raw: bytes, encoding: str | None, path: Path) -> tuple[str, str]:
    """The text of a CSV and how it was decoded: ``encoding``, else by its BOM, else UTF-8; never guessed."""
    if encoding:
        enc = encoding
    else:
        enc = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        codecs.lookup(enc)
    except LookupError:
        raise DataError(f"--encoding {enc!r}: unknown encoding", hint="e.g. utf-8, cp1252 (Excel on Windows), latin-1") from None
    try:
        text = raw.decode(enc)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not {enc} text (byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start})",
                        hint="give the file's encoding with --encoding (cp1252 for Excel on Windows, latin-1, "
                             "utf-16), or re-save it as UTF-8") from exc
    bom = text.startswith("\ufeff") or enc == "utf-8-sig"
    return text.lstrip("\ufeff"), f"{enc}{' with BOM' if bom and enc != 'utf-8-sig' else ''}".replace("utf-8-sig", "utf-8 with BOM")


def _delimiter(value: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
    d = named.get(value.lower(), value)
    if len(d) != 1:
        raise DataError(f"--delimiter {value!r}: one character expected", hint="e.g. ',', ';', tab, '|'")
    return d


def sniff_delimiter(text: str, suffix: str) -> str:
    """The delimiter: :class:`csv.Sniffer`'s guess when it splits the header and rows alike, else the best such."""
    default = "\t" if suffix in (".tsv", ".tab") else ","
    sample = text[:65536]
    candidates = [default, ",", ";", "\t", "|"]
    try:
        candidates.insert(0, csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter)
    except csv.Error:
        pass

    def score(d: str) -> tuple[int, int]:
        rows = []
        try:
            for row in csv.reader(io.StringIO(sample, newline=""), delimiter=d):
                rows.append(len(row))
                if len(rows) > 50:
                    break
        except csv.Error:
            return (0, 0)
        if not rows or rows[0] < 2:
            return (0, 0)
        body = rows[1:-1] or rows[1:]  # the sample may cut the last row
        return (sum(n == rows[0] for n in body) + 1, rows[0])

    best = max(dict.fromkeys(candidates), key=lambda d: score(d))  # ties: the sniffer's, then the default
    return best if score(best)[0] else default


def read_csv(path: Path, opts: ImportOptions) -> Table:
    text, shown = decode(path.read_bytes(), opts.encoding, path)
    delimiter = _delimiter(opts.delimiter) if opts.delimiter else sniff_delimiter(text, path.suffix.lower())
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a long document in one cell is a cell, not an error
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    table = Table(kind="tsv" if delimiter == "\t" else "csv", columns=[], rows=[], detail=f"delimiter {delimiter!r}, {shown}")
    header: list[str] | None = None
    number, last_line = 0, 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number += 1
            eof = "end of data" in str(exc)
            table.problems.append(Problem(
                number, "bad_quoting",
                (f"a quoted cell opened in this row (line {last_line + 1} of the file) never closes: the rest of the "
                 "file would be one cell, so nothing from here on was read" if eof
                 else f"cannot be parsed: {exc} (line {reader.line_num} of the file)")
                + '; fix the quotes (a quote inside a quoted cell is written twice: "")', unit="row"))
            last_line = reader.line_num
            if eof:
                break
            continue
        number += 1
        start, last_line = last_line + 1, reader.line_num
        if header is None:
            if not any(c.strip() for c in cells):
                number -= 1  # blank lines before the header are not rows
                continue
            header, notes = _header(cells, lambda i: f"column {i + 1}")
            table.columns, table.notes = header, notes
            continue
        note = f"lines {start}-{last_line} of the file" if last_line > start else ""
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            table.problems.append(Problem(
                number, "bad_row", f"{len(cells)} cells, the header has {len(header)}: a delimiter {delimiter!r} inside an "
                "unquoted cell? Quote that cell" + (f" ({note})" if note else ""), unit="row"))
            continue
        table.rows.append(Row(number, dict(zip(header, cells)), note))
    return table


# ---- XLSX ------------------------------------------------------------------------------------
def _letters(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


def read_xlsx(path: Path, opts: ImportOptions) -> Table:
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - a declared dependency of the data extra
        raise DataError("reading .xlsx needs openpyxl", hint="pip install 'tailored[data]' (or openpyxl)") from exc
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException: not a workbook
        raise DataError(f"{path}: not an Excel workbook ({type(exc).__name__}: {exc})",
                        hint="save it as .xlsx (Excel 2007+); .xls files: re-save as .xlsx or CSV") from exc
    try:
        names = wb.sheetnames
        sheet = opts.sheet
        if sheet is None or sheet == "":
            name = names[0]
        elif str(sheet) in names:
            name = str(sheet)
        elif str(sheet).lstrip("-").isdigit() and 1 <= int(sheet) <= len(names):
            name = names[int(sheet) - 1]
        else:
            raise DataError(f"{path}: no sheet {sheet!r}; the sheets are: {', '.join(names)}",
                            hint="--sheet NAME, or its number (1 = the first sheet)")
        ws = wb[name]
        detail = f"sheet {name!r}" + (f", {names.index(name) + 1} of {len(names)}: {', '.join(names)}" if len(names) > 1 else "")
        table = Table(kind="xlsx", columns=[], rows=[], detail=detail)
        header: list[str] | None = None
        for number, values in enumerate(ws.iter_rows(min_row=1, values_only=True), start=1):
            if header is None:
                if all(cell_text(v).strip() == "" for v in values):
                    continue
                header, table.notes = _header(values, _letters)
                table.columns = header
                letters = {h: _letters(i) for i, h in enumerate(header)}
                table.cell_ref = lambda row, col, letters=letters: f"cell {letters.get(col, '?')}{row}" if col in letters else ""
                continue
            cells = dict(zip(header, values))
            extra = [v for v in values[len(header):] if cell_text(v).strip()]
            if extra:
                table.problems.append(Problem(number, "bad_row", f"{len(extra)} cell(s) right of the last named column "
                                              f"({_letters(len(header))}{number} on): give that column a header", unit="row"))
                continue
            table.rows.append(Row(number, cells))
        if header is None:
            table.notes.append(f"sheet {name!r} is empty")
        return table
    finally:
        wb.close()


# ---- Parquet / Arrow / datasets folders --------------------------------------------------------
def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:  # pragma: no cover - a declared dependency of the data extra
        raise DataError("reading Parquet/Arrow needs pyarrow", hint="pip install 'tailored[data]' (or pyarrow)") from exc
    return pyarrow


def _arrow_table(tables: list[Any], kind: str, detail: str) -> Table:
    pa = _pyarrow()
    data = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    columns = list(data.column_names)
    rows = [Row(i, cells) for i, cells in enumerate(data.to_pylist(), start=1)]
    return Table(kind=kind, columns=columns, rows=rows, detail=detail,
                 notes=["rows are numbered from 1 (a pandas/datasets index is the row number - 1)"])


def read_parquet(path: Path, opts: ImportOptions) -> Table:
    _pyarrow()
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path)
    except Exception as exc:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"{path}: not a readable Parquet file ({exc})", hint="write it with pyarrow or pandas.to_parquet") from exc
    return _arrow_table([data], "parquet", "")


def _read_ipc(path: Path) -> Any:
    pa = _pyarrow()
    errors = []
    for opener, what in ((pa.ipc.open_file, "file"), (pa.ipc.open_stream, "stream")):
        try:
            with pa.memory_map(str(path)) as source:
                return opener(source).read_all(), what
        except Exception as exc:  # ArrowInvalid: not this flavour of IPC
            errors.append(str(exc))
    raise DataError(f"{path}: not an Arrow IPC file or stream ({errors[-1]})", hint="write it with pyarrow.ipc or feather")


def read_arrow(path: Path, opts: ImportOptions) -> Table:
    data, what = _read_ipc(path)
    return _arrow_table([data], "arrow", f"IPC {what}")


def read_datasets_folder(path: Path, opts: ImportOptions) -> Table:
    """A folder written by ``Dataset.save_to_disk`` (state.json + data-*.arrow) or ``DatasetDict.save_to_disk``."""
    detail = ""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits") or []
        split = opts.split or ("train" if "train" in splits else (splits[0] if len(splits) == 1 else None))
        if split not in splits:
            raise DataError(f"{path}: a DatasetDict with splits {', '.join(splits)}; which one?",
                            hint="--split NAME" if opts.split is None else f"--split {opts.split!r} is not one of them")
        detail = f"split {split!r} of {', '.join(splits)}"
        path = path / split
    state_file = path / "state.json"
    if not state_file.is_file():
        raise DataError(f"{path}: not a folder written by datasets' save_to_disk (no state.json)",
                        hint="give the folder save_to_disk wrote, or a .parquet/.arrow/.csv file")
    state = json.loads(state_file.read_text())
    files = [path / f["filename"] for f in state.get("_data_files", [])]
    if not files:
        raise DataError(f"{state_file}: lists no data files", hint="save the dataset again with save_to_disk")
    tables = [_read_ipc(f)[0] for f in files]
    detail = ", ".join(x for x in (detail, f"{len(files)} Arrow file(s)") if x)
    return _arrow_table(tables, "datasets", detail)


# ---- JSON rows -------------------------------------------------------------------------------
def read_json_rows(path: Path, opts: ImportOptions) -> Table:
    value = load_json(path)
    if not isinstance(value, list):
        raise DataError(f"{path}: a JSON file must hold a list of rows (objects)", hint="or write one object per line (JSONL)")
    table = Table(kind="json-rows", columns=[], rows=[])
    for i, obj in enumerate(value, start=1):
        if not isinstance(obj, dict):
            table.problems.append(Problem(i, "not_an_object", f"expected an object, got {type(obj).__name__}", unit="row"))
            continue
        table.columns += [k for k in obj if k not in table.columns]
        table.rows.append(Row(i, obj))
    table.notes.append("rows are numbered from 1 in the order of the list")
    return table


def read_jsonl_rows(path: Path, opts: ImportOptions) -> Table:
    table = Table(kind="jsonl-rows", columns=[], rows=[], unit="line")
    for n, obj in iter_objects(path, table.problems):  # lines end at \n only (see data/jsonl.py)
        table.columns += [k for k in obj if k not in table.columns]
        table.rows.append(Row(n, obj))
    return table


def read_table(path: Path, layout: str, opts: ImportOptions) -> Table:
    """The rows of a table file of the given layout."""
    readers: dict[str, Callable[[Path, ImportOptions], Table]] = {
        "csv": read_csv, "tsv": read_csv, "xlsx": read_xlsx, "parquet": read_parquet, "arrow": read_arrow,
        "datasets": read_datasets_folder, "json-rows": read_json_rows, "jsonl-rows": read_jsonl_rows,
    }
    return readers[layout](path, opts)
