"""``data convert``: between OpenAI chat, alpaca, prompt-completion and sharegpt, in either direction.

Every input is read into chat form by :mod:`readers` (which validates it), so any format converts to
any other. Chat output follows OpenAI's fine-tuning rules (the same file can be uploaded to the hosted
service and passes ``tailored data check``). Conversions that would lose information are refused
with the line numbers: multi-turn conversations cannot become alpaca or prompt-completion rows, and
prompt-completion has no place for a system prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tailored.data.readers import example_to_chat, read_records, write_jsonl
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


def convert_file(path: str | Path, output: str | Path, *, to: str, system: str | None = None, format: str = "auto") -> int:
    """Convert ``path`` into ``output`` in format ``to``; returns the number of examples written.

    Args:
        path: input JSONL (format auto-detected unless ``format`` is given).
        output: the converted JSONL.
        to: ``chat``, ``alpaca``, ``prompt-completion`` or ``sharegpt``.
        system: a system prompt to set on every example ('' removes system prompts).
        format: force the input format.
    """
    to = to.replace("_", "-")
    if to not in TARGETS:
        raise DataError(f"--to {to}: unknown format", hint=f"use one of: {', '.join(TARGETS)}")
    read = read_records(path, format=format)
    errors = [p for p in read.problems if p.severity == "error"]
    if errors:
        first = errors[0]
        raise DataError(f"{path}: {len(errors)} invalid line(s), first at line {first.line}: {first.message}",
                        hint="run `tailored data check` (or `data clean`) first; conversion never drops lines silently")
    rows = [to_row(with_system(ex, system), to) for ex in read.examples]
    write_jsonl(output, rows)
    return len(rows)
