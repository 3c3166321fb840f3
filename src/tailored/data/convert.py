"""``data convert``: between OpenAI chat, alpaca, prompt-completion and sharegpt, in either direction.

Every input is read into chat form by :mod:`readers` (which validates it), so any format converts to
any other. Chat output follows OpenAI's fine-tuning rules (the same file can be uploaded to the hosted
service and passes ``tailored data check``). Conversions that would lose information are refused
with the line numbers: multi-turn conversations cannot become alpaca or prompt-completion rows, and
prompt-completion has no place for a system prompt.

Tables, spreadsheets, dataset folders and labelling exports (see :mod:`tailored.data.imports`) convert
the same way, with :class:`~tailored.data.imports.ImportOptions` saying which columns to use;
:func:`prepare` reads and renders without writing (``--dry-run``), and its layout says what was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tailored.data.imports import ImportOptions, Layout, using
from tailored.data.readers import ReadResult, example_to_chat, read_records, write_jsonl
from tailored.data.records import Example
from tailored.errors import DataError

TARGETS = ("chat", "alpaca", "prompt-completion", "sharegpt")
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}


def with_system(example: Example, system: str | None) -> Example:
    """The example with its system prompt replaced by ``system`` (unchanged when None)."""
    if system is None or example.text is not None:
        return example
    msgs = [m for m in example.messages if m.get("role") != "system"]
    return Example(example.line, ([{"role": "system", "content": system}] if system.strip() else []) + msgs, example.tools)


def _single_turn(ex: Example, target: str) -> tuple[str | None, str, str]:
    system = [m for m in ex.messages if m["role"] == "system"]
    rest = [m for m in ex.messages if m["role"] != "system"]
    if len(system) > 1 or [m["role"] for m in rest] != ["user", "assistant"] or ex.tools:
        raise DataError(
            f"line {ex.line}: {target} holds one user turn and one answer; this example has roles "
            f"{[m['role'] for m in ex.messages]}" + (" and tools" if ex.tools else ""),
            hint="convert multi-turn or tool data to chat or sharegpt instead",
        )
    return (system[0]["content"] if system else None), rest[0]["content"], rest[1]["content"]


def to_row(ex: Example, target: str) -> dict[str, Any]:
    """One example in the ``target`` format.

    Args:
        ex: the example (chat form).
        target: one of ``chat``, ``alpaca``, ``prompt-completion``, ``sharegpt``.
    """
    if ex.text is not None or ex.chosen is not None:
        raise DataError(f"line {ex.line}: plain-text and preference examples cannot be converted", hint="convert chat-like data only")
    if target == "chat":
        return example_to_chat(ex)
    if target == "sharegpt":
        row: dict[str, Any] = {}
        convs = []
        for m in ex.messages:
            if m["role"] == "system" and not convs and "system" not in row:
                row["system"] = m["content"]
            else:
                convs.append({"from": _SHAREGPT_FROM[m["role"]], "value": m.get("content") or ""})
        return {"conversations": convs, **row}
    system, user, answer = _single_turn(ex, target)
    if target == "alpaca":
        return {"instruction": user, "input": "", "output": answer, **({"system": system} if system else {})}
    if target == "prompt-completion":
        if system:
            raise DataError(f"line {ex.line}: prompt-completion has no place for the system prompt",
                            hint="convert to chat, alpaca or sharegpt, or drop system prompts with --system ''")
        return {"prompt": user, "completion": answer}
    raise DataError(f"--to {target}: unknown format", hint=f"use one of: {', '.join(TARGETS)}")


@dataclass
class Prepared:
    """A conversion read and rendered, not yet written."""

    path: str
    to: str
    read: ReadResult
    rows: list[dict[str, Any]] = field(default_factory=list)
    layout: Layout | None = None

    @property
    def errors(self) -> list[Any]:
        return [p for p in self.read.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Any]:
        return [p for p in self.read.problems if p.severity != "error"]

    def refuse_errors(self, limit: int = 20) -> None:
        """Raise the DataError that lists the invalid lines/rows (conversion never drops them silently)."""
        errors = self.errors
        if not errors:
            return
        first = errors[0]
        listed = "".join(f"\n  {p.where}: {p.message}" if p.line else f"\n  {p.message}" for p in errors[:limit])
        more = f"\n  ... and {len(errors) - limit} more" if len(errors) > limit else ""
        unit = first.unit if first.line else "line"
        raise DataError(f"{self.path}: {len(errors)} invalid {unit}(s), first at {first.where}: {first.message}"
                        + (f"{listed}{more}" if len(errors) > 1 else ""),
                        hint="fix them (or run `tailored data check` / `data clean` first); conversion never drops "
                             f"{unit}s silently")


def prepare(path: str | Path, *, to: str, system: str | None = None, format: str = "auto",
            options: ImportOptions | None = None) -> Prepared:
    """Read ``path`` and render every valid example in format ``to``; nothing is written.

    Args:
        path: input file (JSONL in any format, or a table / labelling export; format auto-detected).
        to: ``chat``, ``alpaca``, ``prompt-completion`` or ``sharegpt``.
        system: a system prompt to set on every example ('' removes system prompts). For tables, a row's
            ``system_column`` cell wins over it.
        format: force the input format (a JSONL format, or an import layout such as ``csv``).
        options: which columns of a table or export to use (ignored for JSONL chat-like files).
    """
    to = to.replace("_", "-")
    if to not in TARGETS:
        raise DataError(f"--to {to}: unknown format", hint=f"use one of: {', '.join(TARGETS)}")
    opts = options or ImportOptions()
    if system is not None and opts.system is None:
        opts = replace(opts, system=system)
    with using(opts) as reading:
        read = read_records(path, format=format)
    layout = reading.layouts[-1] if reading.layouts else None
    prepared = Prepared(str(path), to, read, layout=layout)
    if prepared.errors:
        return prepared
    examples = read.examples if layout is not None else [with_system(ex, system) for ex in read.examples]
    prepared.rows = [to_row(ex, to) for ex in examples]
    return prepared


def convert_file(path: str | Path, output: str | Path, *, to: str, system: str | None = None, format: str = "auto",
                 options: ImportOptions | None = None) -> int:
    """Convert ``path`` into ``output`` in format ``to``; returns the number of examples written.

    Args:
        path: input JSONL (format auto-detected unless ``format`` is given), or a table / labelling export.
        output: the converted JSONL.
        to: ``chat``, ``alpaca``, ``prompt-completion`` or ``sharegpt``.
        system: a system prompt to set on every example ('' removes system prompts).
        format: force the input format.
        options: columns and reading options for tables and labelling exports.
    """
    prepared = prepare(path, to=to, system=system, format=format, options=options)
    prepared.refuse_errors()
    write_jsonl(output, prepared.rows)
    return len(prepared.rows)
