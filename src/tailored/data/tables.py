"""Tables into chat examples: CSV/TSV, XLSX, Parquet, Arrow, ``datasets.save_to_disk`` folders, JSON rows.

A row becomes ``[system?, user, assistant]``: the user's turn from ``prompt_column`` or a
``prompt_template`` over several columns, the answer from ``answer_column``, the system prompt from
``system_column`` (or ``system``). Columns are chosen by :class:`Columns`, which the labelling readers
share. A row that cannot become an example is a :class:`Problem` naming its row (as a spreadsheet
numbers it: the header is row 1) and column; entirely blank rows are skipped and counted in the layout.

The files are parsed into rows by :mod:`tailored.data.table_files`.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.data.imports import ANSWER_COLUMNS, PROMPT_COLUMNS, SYSTEM_COLUMNS, ImportOptions, ImportResult, Layout
from tailored.data.readers import detect_format, parse_line
from tailored.data.records import Example, Problem
from tailored.data.table_files import Row, Table, cell_text, read_table
from tailored.errors import DataError

STRUCTURED_KEYS = ("messages", "conversations", "preferred_output")
ID_COLUMNS = ("id", "idx", "index", "row", "uuid", "_id")


def find_column(columns: list[str], name: str) -> str | None:
    """``name`` among ``columns``: exactly, else ignoring case and surrounding spaces."""
    if name in columns:
        return name
    folded = {c.strip().casefold(): c for c in reversed(columns)}
    return folded.get(name.strip().casefold())


def _unknown(path: Path, what: str, name: str, columns: list[str]) -> DataError:
    close = difflib.get_close_matches(name, columns, n=1)
    return DataError(f"{path}: no column {name!r} for the {what}; the columns are: {', '.join(columns) or '(none)'}",
                     hint=(f"did you mean {close[0]!r}? " if close else "") + "names match exactly, then ignoring case")


def template_fields(template: str) -> list[str]:
    fields = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name.strip():
                raise DataError(f"--prompt-template {template!r}: '{{}}' names no column",
                                hint="write the column's name in the braces: {subject}; '{{' for a literal brace")
            fields.append(name)
    return fields


def render_template(template: str, values: dict[str, str]) -> str:
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values.get(name, ""))
    return "".join(out)


@dataclass
class Columns:
    """Which columns make the prompt, the answer and the system prompt (resolved once per file)."""

    prompt: str | None = None
    template: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # template field -> column
    alpaca: tuple[str, str] | None = None  # (instruction, input): input joined when not empty, like alpaca
    answer: str | None = None
    system_column: str | None = None
    system: str | None = None

    @classmethod
    def resolve(cls, path: Path, columns: list[str], opts: ImportOptions, *, need_answer: bool = True,
                answer_defaults: tuple[str, ...] = ANSWER_COLUMNS, ignore: Iterable[str] = ()) -> Columns:
        """Apply the options (an unknown column is a DataError listing the columns), then the defaults."""
        cols = cls(system=opts.system)
        ignore = set(ignore)
        if opts.prompt_template:
            for name in template_fields(opts.prompt_template):
                found = find_column(columns, name)
                if found is None:
                    raise _unknown(path, "prompt template", name, columns)
                cols.fields[name] = found
            cols.template = opts.prompt_template
        elif opts.prompt_column:
            cols.prompt = find_column(columns, opts.prompt_column)
            if cols.prompt is None:
                raise _unknown(path, "prompt", opts.prompt_column, columns)
        if opts.answer_column:
            cols.answer = find_column(columns, opts.answer_column)
            if cols.answer is None:
                raise _unknown(path, "answer", opts.answer_column, columns)
        if opts.system_column:
            cols.system_column = find_column(columns, opts.system_column)
            if cols.system_column is None:
                raise _unknown(path, "system prompt", opts.system_column, columns)
        else:
            cols.system_column = next((c for c in (find_column(columns, n) for n in SYSTEM_COLUMNS) if c), None)
        if need_answer and cols.answer is None:
            cols.answer = next((c for c in (find_column(columns, n) for n in answer_defaults) if c), None)
        if not cols.has_prompt():
            instruction, inp = find_column(columns, "instruction"), find_column(columns, "input")
            if instruction and inp and inp != cols.answer:
                cols.alpaca = (instruction, inp)
            else:
                cols.prompt = next((c for c in (find_column(columns, n) for n in PROMPT_COLUMNS)
                                    if c and c != cols.answer), None)
        # One column left over: it is the one not named (printed in the layout before anything is written).
        used = {cols.prompt, cols.answer, cols.system_column, *cols.fields.values(), *(cols.alpaca or ())}
        rest = [c for c in columns if c not in used and c not in ignore and c.strip().casefold() not in ID_COLUMNS]
        if need_answer and cols.answer is None and cols.has_prompt() and len(rest) == 1:
            cols.answer = rest[0]
        elif not cols.has_prompt() and (cols.answer or not need_answer) and len(rest) == 1:
            cols.prompt = rest[0]
        if not cols.has_prompt() or (need_answer and cols.answer is None):
            missing = " and ".join(n for n, ok in (("prompt", cols.has_prompt()), ("answer", cols.answer or not need_answer))
                                   if not ok)
            raise DataError(
                f"{path}: which column holds the {missing}? The columns are: {', '.join(columns) or '(none)'}",
                hint="name them with --prompt-column (or --prompt-template '{a}\\n{b}') and --answer-column; "
                     f"found by default: prompt {'/'.join(PROMPT_COLUMNS)}, answer {'/'.join(answer_defaults)}")
        return cols

    def has_prompt(self) -> bool:
        return bool(self.prompt or self.template or self.alpaca)

    def describe(self) -> dict[str, str]:
        if self.template:
            prompt = f"template {self.template!r}"
        elif self.alpaca:
            prompt = f"columns {self.alpaca[0]!r} + {self.alpaca[1]!r} (input joined when not empty)"
        else:
            prompt = f"column {self.prompt!r}"
        system = ""
        if self.system_column:
            system = f"column {self.system_column!r}" + (f" (when empty: {self.system!r})" if self.system else "")
        elif self.system:
            system = f"{self.system!r} (every example)"
        return {"prompt": prompt, "answer": f"column {self.answer!r}" if self.answer else "", "system": system}

    def user_turn(self, cells: dict[str, Any], say: Callable[..., None]) -> str | None:
        """The user's turn of a row, or None after saying why (``say(message, column=, severity=)``)."""
        if self.template:
            values = {name: cell_text(cells.get(col)) for name, col in self.fields.items()}
            empty = [self.fields[n] for n, v in values.items() if not v.strip()]
            if values and len(empty) == len(values):
                if len(empty) == 1:
                    say("empty: the prompt has no text", column=empty[0])
                else:
                    say(f"the prompt's columns {', '.join(map(repr, empty))} are all empty")
                return None
            for col in empty:
                say("empty: the prompt was rendered without it", column=col, severity="warning")
            return render_template(self.template, values)
        if self.alpaca:
            instruction, inp = (cell_text(cells.get(c)) for c in self.alpaca)
            if not instruction.strip():
                say("empty: the prompt has no instruction", column=self.alpaca[0])
                return None
            return instruction if not inp.strip() else f"{instruction}\n\n{inp}"
        text = cell_text(cells.get(self.prompt))
        if not text.strip():
            say("empty: the prompt has no text", column=self.prompt)
            return None
        return text

    def system_of(self, cells: dict[str, Any]) -> str | None:
        if self.system_column:
            text = cell_text(cells.get(self.system_column))
            if text.strip():
                return text
        return self.system if self.system and self.system.strip() else None


def make_example(number: int, system: str | None, user: str | list[dict[str, Any]], answer: str, problems: list[Problem],
                 *, unit: str, tools: Any = None) -> Example | None:
    """The chat example of one row, validated by the chat reader; its problems are told in ``unit``."""
    context = user if isinstance(user, list) else [{"role": "user", "content": user}]
    if system and not any(m.get("role") == "system" for m in context if isinstance(m, dict)):
        context = [{"role": "system", "content": system}] + context
    found: list[Problem] = []
    obj: dict[str, Any] = {"messages": [*context, {"role": "assistant", "content": answer}]}
    if tools:
        obj["tools"] = tools
    example = parse_line(obj, "chat", number, found)
    for p in found:
        p.unit = unit
    problems.extend(found)
    return example


# ---- reading a table -------------------------------------------------------------------------
def read_table_file(path: Path, layout: str, opts: ImportOptions) -> ImportResult:
    return table_examples(path, read_table(path, layout, opts), opts)


def table_examples(path: Path, table: Table, opts: ImportOptions) -> ImportResult:
    """Every row of ``table`` as an example, or as problems naming its row and column."""
    layout = Layout(kind=table.kind, path=str(path), detail=table.detail, columns=list(table.columns),
                    notes=list(table.notes), unit=table.unit)
    result = ImportResult(format=table.kind, problems=list(table.problems), layout=layout)
    structured = (not opts.columns_given() and table.rows
                  and any(k in table.rows[0].cells for k in STRUCTURED_KEYS))
    cols = None
    if structured:
        fmt = detect_format(table.rows[0].cells) or "chat"
        layout.prompt, layout.answer = f"{fmt} records (column(s) {', '.join(k for k in STRUCTURED_KEYS if k in table.columns)})", ""
    else:
        cols = Columns.resolve(path, table.columns, opts)
        layout.prompt, layout.answer, layout.system = cols.describe().values()
    blank = 0
    for row in table.rows:
        if all(not cell_text(v).strip() for v in row.cells.values()):
            blank += 1
            continue
        result.n_lines += 1
        if structured:
            found: list[Problem] = []
            ex = parse_line(row.cells, detect_format(row.cells) or "chat", row.number, found)
            for p in found:
                p.unit = table.unit
            result.problems += found
            if ex is not None and opts.system is not None and ex.text is None:
                from tailored.data.convert import with_system

                ex = with_system(ex, opts.system)
        else:
            ex = row_example(row, cols, result.problems, table.cell_ref, unit=table.unit)
        if ex is not None:
            result.examples.append(ex)
    layout.rows = result.n_lines
    if blank:
        layout.notes.append(f"{blank} blank row(s) skipped")
    if result.n_lines == 0 and not result.problems:
        result.problems.append(Problem(0, "empty_file", "the table has no rows under its header"))
    return result


def row_example(row: Row, cols: Columns, problems: list[Problem],
                cell_ref: Callable[[int, str], str] | None = None, *, unit: str = "row") -> Example | None:
    def say(message: str, *, column: str | None = None, severity: str = "error") -> None:
        where = [x for x in ((cell_ref(row.number, column) if cell_ref and column else ""), row.note) if x]
        problems.append(Problem(row.number, "empty_cell", message + (f" ({'; '.join(where)})" if where else ""),
                                severity=severity, column=column, unit=unit))

    user = cols.user_turn(row.cells, say)
    answer = cell_text(row.cells.get(cols.answer))
    if not answer.strip():
        say("empty: no answer to learn from (fill it in or delete the row)", column=cols.answer)
    if user is None or not answer.strip():
        return None
    return make_example(row.number, cols.system_of(row.cells), user, answer, problems, unit=unit)
