"""Data from where people keep and label it: spreadsheets, tables, dataset folders, labelling tools.

:func:`tailored.data.readers.read_records` hands a file here when :func:`import_layout` recognises it,
so ``data check``, ``data convert``, training and uploads read these files the same way:

=====================  ===========================================================================
layout                 detected by
=====================  ===========================================================================
``csv`` / ``tsv``      ``.csv`` / ``.tsv`` (delimiter sniffed with :class:`csv.Sniffer`, or ``--delimiter``)
``xlsx``               ``.xlsx`` / ``.xlsm`` (openpyxl; ``--sheet`` name or number, 1 = the first sheet)
``parquet``            ``.parquet`` / ``.pq`` (pyarrow)
``arrow``              ``.arrow`` / ``.feather`` / ``.ipc`` (Arrow IPC file or stream, pyarrow)
``datasets``           a folder written by ``datasets.save_to_disk`` (read with pyarrow; ``--split``)
``json-rows``          ``.json`` holding a list of flat objects
``jsonl-rows``         ``.jsonl`` read as a table: only when a column option is given
``label-studio``       ``.json`` export of Label Studio (tasks with ``annotations``)
``label-studio-min``   ``.json`` JSON-MIN export of Label Studio (one flat object per annotation)
``prodigy``            ``.jsonl`` whose lines carry Prodigy's ``answer`` and ``_task_hash``/``_input_hash``
=====================  ===========================================================================

Column options (:class:`ImportOptions`) say which columns hold the prompt, the answer and the system
prompt; without them the defaults in :data:`PROMPT_COLUMNS`, :data:`ANSWER_COLUMNS` and
:data:`SYSTEM_COLUMNS` are looked up (exactly, then ignoring case). The options travel to readers called
deep inside other code (``data check``, training) through :func:`using`, a context variable, so that
:func:`read_records`'s signature stays what it is.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tailored.data.jsonl import iter_json
from tailored.data.readers import ReadResult
from tailored.errors import DataError

LAYOUTS = ("csv", "tsv", "xlsx", "parquet", "arrow", "datasets", "json-rows", "jsonl-rows", "label-studio",
           "label-studio-min", "prodigy")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".xlsx": "xlsx", ".xlsm": "xlsx", ".parquet": "parquet",
            ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
# Defaults, in order of preference (the first present wins; uploads use exactly these).
PROMPT_COLUMNS = ("prompt", "question", "instruction", "input", "query", "text")
ANSWER_COLUMNS = ("answer", "completion", "output", "label", "response")
SYSTEM_COLUMNS = ("system", "system_prompt")
# Prodigy's own keys: never a prompt column.
PRODIGY_KEYS = ("answer", "accept", "options", "label", "spans", "tokens", "meta", "_input_hash", "_task_hash",
                "_session_id", "_annotator_id", "_view_id", "_timestamp", "_is_binary", "config", "html", "user_input")


@dataclass
class ImportOptions:
    """How the rows of a table or a labelling export become chat examples.

    Attributes:
        prompt_column: the column of the user's turn.
        answer_column: the column of the answer (Label Studio: the control's name, e.g. ``sentiment``).
        prompt_template: ``"Ticket: {subject}\\n{body}"``: the user's turn from several columns.
        system: a system prompt for every example (a row's ``system_column`` cell wins when not empty).
        system_column: the column of a per-row system prompt.
        sheet: XLSX sheet, by name or number (1 = the first).
        delimiter: CSV delimiter (default: sniffed).
        encoding: text encoding of CSV/TSV (default: UTF-8, with or without BOM; UTF-16 by its BOM).
        annotator: take this annotator's answers (Label Studio email or id, Prodigy session).
        split: the split of a ``datasets`` DatasetDict folder (default: ``train``, or the only one).
    """

    prompt_column: str | None = None
    answer_column: str | None = None
    prompt_template: str | None = None
    system: str | None = None
    system_column: str | None = None
    sheet: str | int | None = None
    delimiter: str | None = None
    encoding: str | None = None
    annotator: str | None = None
    split: str | None = None

    def columns_given(self) -> bool:
        return any((self.prompt_column, self.answer_column, self.prompt_template, self.system_column))


@dataclass
class Layout:
    """What was found: printed before anything is written (``data convert``) and on top of ``data check``."""

    kind: str
    path: str
    detail: str = ""
    rows: int = 0
    unit: str = "row"
    columns: list[str] = field(default_factory=list)
    prompt: str = ""
    answer: str = ""
    system: str = ""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        names = {"csv": "CSV", "tsv": "TSV", "xlsx": "Excel workbook", "parquet": "Parquet", "arrow": "Arrow",
                 "datasets": "datasets folder (save_to_disk)", "json-rows": "JSON rows", "jsonl-rows": "JSONL rows",
                 "label-studio": "Label Studio JSON export", "label-studio-min": "Label Studio JSON-MIN export",
                 "prodigy": "Prodigy JSONL"}
        head = f"{self.path}: {names.get(self.kind, self.kind)}" + (f" ({self.detail})" if self.detail else "")
        out = [f"{head}, {self.rows} {self.unit}s" + (f"; columns: {', '.join(self.columns)}" if self.columns else "")]
        for name in ("prompt", "answer", "system"):
            value = getattr(self, name)
            if value:
                out.append(f"  {name:<7}<- {value}")
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportResult(ReadResult):
    """A :class:`ReadResult` that also says how the file was read."""

    layout: Layout | None = None


class Reading:
    """The options in force for reads inside a ``with`` block, and the layouts those reads found."""

    def __init__(self, options: ImportOptions | None = None) -> None:
        self.options = options or ImportOptions()
        self.layouts: list[Layout] = []
        self._token: Any = None

    def __enter__(self) -> Reading:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self._token)


_CURRENT: ContextVar[Reading | None] = ContextVar("tailored_import_reading", default=None)


def using(options: ImportOptions | None = None) -> Reading:
    """``with using(ImportOptions(answer_column="reply")) as reading: check_file("tickets.xlsx")``."""
    return Reading(options)


def current_options() -> ImportOptions:
    reading = _CURRENT.get()
    return reading.options if reading is not None else ImportOptions()


# ---- detection ---------------------------------------------------------------------------------
_JSON_CACHE: dict[tuple[str, int, int], Any] = {}


def load_json(path: Path) -> Any:
    """The parsed ``.json`` file (one file cached: detection and reading load it once)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _JSON_CACHE:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc})", hint="re-save the file as UTF-8") from exc
        value = json.loads(text)
        _JSON_CACHE.clear()
        _JSON_CACHE[key] = value
    return _JSON_CACHE[key]


def json_layout(value: Any) -> str | None:
    """``label-studio``, ``label-studio-min`` or ``json-rows`` for a parsed JSON list of objects."""
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value[:50]):
        return None
    first = value[0]
    if "annotations" in first or "predictions" in first or isinstance(first.get("data"), dict):
        return "label-studio"
    if "annotation_id" in first or "annotator" in first:
        return "label-studio-min"
    return "json-rows"


def looks_like_prodigy(obj: Any) -> bool:
    return (isinstance(obj, dict) and obj.get("answer") in ("accept", "reject", "ignore")
            and ("_task_hash" in obj or "_input_hash" in obj))


def first_object(path: Path) -> Any:
    """The first non-blank line of a JSONL file, parsed (None when it is not JSON)."""
    try:
        for _, value, problem in iter_json(path):
            return None if problem is not None else value
    except (OSError, DataError):
        return None
    return None


def import_layout(path: str | Path, format: str = "auto") -> str | None:
    """The layout ``path`` is read with, or None for the JSONL formats of :mod:`readers`."""
    path = Path(path)
    fmt = (format or "auto").lower().replace("_", "-")
    if fmt in LAYOUTS:
        return fmt
    if fmt != "auto":
        return None
    if path.is_dir():  # a folder save_to_disk wrote; any other folder is refused by the JSONL reader, by name
        saved = ("state.json", "dataset_dict.json", "dataset_info.json")
        return "datasets" if any((path / name).is_file() for name in saved) else None
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if not path.is_file():
        return None
    if suffix == ".json":
        try:
            layout = json_layout(load_json(path))
        except (json.JSONDecodeError, DataError):
            layout = None  # JSON lines in a .json file: the JSONL reader says what is wrong, line by line
        if layout is not None:
            return layout
    first = first_object(path)
    if looks_like_prodigy(first):
        return "prodigy"
    if (current_options().columns_given() and isinstance(first, dict)
            and not {"messages", "conversations", "preferred_output"} & set(first)):
        return "jsonl-rows"
    return None


def read_import(path: str | Path, layout: str, options: ImportOptions | None = None) -> ImportResult:
    """Read ``path`` as ``layout`` into chat examples; bad rows become problems (by row and column)."""
    from tailored.data import labelling, tables

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check the path given to --data / --validation")
    if layout == "datasets" and not path.is_dir():
        raise DataError(f"{path}: --format datasets needs the folder written by save_to_disk", hint="give the folder")
    if layout != "datasets" and path.is_dir():
        raise DataError(f"{path} is a folder", hint="give a file, or a folder written by datasets' save_to_disk")
    opts = options or current_options()
    if layout in ("label-studio", "label-studio-min"):
        result = labelling.read_label_studio(path, opts, minimal=layout == "label-studio-min")
    elif layout == "prodigy":
        result = labelling.read_prodigy(path, opts)
    else:
        result = tables.read_table_file(path, layout, opts)
    reading = _CURRENT.get()
    if reading is not None and result.layout is not None:
        reading.layouts.append(result.layout)
    return result
