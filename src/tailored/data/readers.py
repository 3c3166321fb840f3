"""Read JSONL files in any supported format into :class:`Example` records, with per-line problems.

Formats (auto-detected from the keys of the first valid line, or forced with ``format=``):

- ``chat``: OpenAI chat fine-tuning, ``{"messages": [{"role", "content", "weight"?}], "tools"?}``
- ``prompt_completion``: ``{"prompt", "completion"}``
- ``alpaca``: ``{"instruction", "input"?, "output", "system"?}``
- ``sharegpt``: ``{"conversations": [{"from", "value"}], "system"?}``
- ``text``: ``{"text"}`` (every token is trained)
- ``preference``: OpenAI DPO, ``{"input": {"messages"}, "preferred_output": [...], "non_preferred_output": [...]}``

Problem categories follow OpenAI's fine-tuning validation (``invalid_json``, ``missing_messages_list``,
``message_missing_key``, ``message_unrecognized_key``, ``unrecognized_role``, ``missing_content``,
``no_assistant_message``, ``bad_weight``) plus ``not_an_object``, ``format_mismatch`` and ``empty_file``, and
those of :mod:`tailored.data.jsonl` for lines that cannot be read at all (``not_utf8``, ``line_too_long``,
``invalid_unicode``). A file is read line by line (lines end at ``\\n`` only), so one bad line never costs another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.config.files import atomic_open
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES, iter_json
from tailored.data.records import FORMATS, ROLES, Example, Problem
from tailored.errors import DataError

MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id", "function_call"}
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system",
    "tool": "tool", "observation": "tool", "function_response": "tool",
}


@dataclass
class ReadResult:
    format: str
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_lines: int = 0


def detect_format(obj: dict[str, Any]) -> str | None:
    """The format a parsed line looks like, or None."""
    if "messages" in obj:
        return "chat"
    if "preferred_output" in obj or "non_preferred_output" in obj:
        return "preference"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    if "text" in obj:
        return "text"
    return None


def _check_messages(messages: Any, line: int, problems: list[Problem], *, need_assistant: bool = True) -> bool:
    if not isinstance(messages, list) or not messages:
        problems.append(Problem(line, "missing_messages_list", "'messages' must be a non-empty list of messages"))
        return False
    ok = True
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            problems.append(Problem(line, "message_missing_key", f"{where} is not an object"))
            ok = False
            continue
        if "role" not in m:
            problems.append(Problem(line, "message_missing_key", f"{where} has no 'role'"))
            ok = False
        elif m["role"] not in ROLES:
            problems.append(
                Problem(line, "unrecognized_role", f"{where} has role {_short(m['role'])}; expected one of {', '.join(ROLES)}")
            )
            ok = False
        extra = set(m) - MESSAGE_KEYS
        if extra:
            problems.append(Problem(line, "message_unrecognized_key", f"{where} has unknown key(s) {sorted(extra)}"))
            ok = False
        content = m.get("content")
        bad_part = _bad_part(content) if isinstance(content, list) else None
        if "content" not in m and not m.get("tool_calls") and not m.get("function_call"):
            problems.append(Problem(line, "message_missing_key", f"{where} has no 'content'"))
            ok = False
        elif bad_part:
            problems.append(Problem(line, "missing_content", f"{where}.{bad_part}"))
            ok = False
        elif content is not None and not isinstance(content, (str, list)):
            problems.append(Problem(line, "missing_content", f"{where}.content must be a string or a list of text parts"))
            ok = False
        elif not _content_text(content).strip() and not m.get("tool_calls"):
            problems.append(Problem(line, "missing_content", f"{where}.content is empty"))
            ok = False
        if "weight" in m:
            if m.get("role") != "assistant":
                problems.append(Problem(line, "bad_weight", f"{where}: 'weight' is only allowed on assistant messages"))
                ok = False
            elif m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                problems.append(Problem(line, "bad_weight", f"{where}.weight is {m['weight']!r}; expected 0 or 1"))
                ok = False
    if need_assistant and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append(Problem(line, "no_assistant_message", "no assistant message: there is nothing to learn"))
        ok = False
    return ok


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bad_part(parts: list[Any]) -> str | None:
    """What is wrong with a list of content parts (only text parts are supported), or None."""
    for j, p in enumerate(parts):
        if not isinstance(p, dict) or p.get("type") != "text":
            return f'content[{j}] is not a text part: only text parts ({{"type": "text", "text": "..."}}) are supported'
        if not isinstance(p.get("text"), str):
            got = "nothing" if "text" not in p else "null" if p["text"] is None else type(p["text"]).__name__
            return f"content[{j}].text must be a string, got {got}"
    return None


def _content_text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: the string, or its (already checked) text parts joined."""
    if isinstance(content, list):
        return "".join(p["text"] for p in content)
    return content or ""


def _flatten_content(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), list):
            m["content"] = _content_text(m["content"])
        out.append(m)
    return out


def _require(obj: dict[str, Any], keys: tuple[str, ...], line: int, problems: list[Problem], fmt: str) -> bool:
    ok = True
    for k in keys:
        if k not in obj:
            problems.append(Problem(line, "message_missing_key", f"{fmt} line has no {k!r}"))
            ok = False
        elif not isinstance(obj[k], str) or not obj[k].strip():
            problems.append(Problem(line, "missing_content", f"{k!r} must be a non-empty string"))
            ok = False
    return ok


def parse_line(obj: dict[str, Any], fmt: str, line: int, problems: list[Problem]) -> Example | None:
    """Convert one parsed JSON object of format ``fmt`` into an Example (or record problems)."""
    if fmt == "chat":
        if not _check_messages(obj.get("messages"), line, problems):
            return None
        tools = obj.get("tools")
        return Example(line=line, messages=_flatten_content(obj["messages"]), tools=tools if isinstance(tools, list) else None)
    if fmt == "prompt_completion":
        if not _require(obj, ("prompt", "completion"), line, problems, fmt):
            return None
        return Example(line, [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}])
    if fmt == "alpaca":
        if not _require(obj, ("instruction", "output"), line, problems, fmt):
            return None
        user = obj["instruction"] if not str(obj.get("input") or "").strip() else f"{obj['instruction']}\n\n{obj['input']}"
        msgs = [{"role": "system", "content": obj["system"]}] if str(obj.get("system") or "").strip() else []
        return Example(line, msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": obj["output"]}])
    if fmt == "sharegpt":
        conv = obj.get("conversations")
        if not isinstance(conv, list) or not conv:
            problems.append(Problem(line, "missing_messages_list", "'conversations' must be a non-empty list"))
            return None
        msgs = [{"role": "system", "content": obj["system"]}] if str(obj.get("system") or "").strip() else []
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                problems.append(Problem(line, "message_missing_key", f"conversations[{i}] needs 'from' and 'value'"))
                return None
            role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
            if role is None:
                problems.append(Problem(line, "unrecognized_role", f"conversations[{i}].from is {turn['from']!r}"))
                return None
            msgs.append({"role": role, "content": turn["value"]})
        return parse_line({"messages": msgs}, "chat", line, problems)
    if fmt == "text":
        if not isinstance(obj.get("text"), str) or not obj["text"].strip():
            problems.append(Problem(line, "missing_content", "'text' must be a non-empty string"))
            return None
        return Example(line, text=obj["text"])
    if fmt == "preference":
        prompt = (obj.get("input") or {}).get("messages") if isinstance(obj.get("input"), dict) else None
        ok = _check_messages(prompt, line, problems, need_assistant=False)
        for key in ("preferred_output", "non_preferred_output"):
            answer = obj.get(key)
            if not isinstance(answer, list) or not answer:
                problems.append(Problem(line, "message_missing_key", f"{key!r} must be a non-empty list of assistant messages"))
                ok = False
            else:
                ok = _check_messages(answer, line, problems) and ok
        if not ok:
            return None
        return Example(line, messages=_flatten_content(prompt), chosen=_flatten_content(obj["preferred_output"]),
                       rejected=_flatten_content(obj["non_preferred_output"]))
    raise DataError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")


def read_records(path: str | Path, format: str = "auto", *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> ReadResult:
    """Read a JSONL file, streamed. Never raises for bad lines: they become :class:`Problem` entries.

    Spreadsheets, tables, dataset folders and labelling-tool exports (CSV/TSV, XLSX, Parquet, Arrow,
    ``datasets.save_to_disk`` folders, Label Studio, Prodigy) are read by :mod:`tailored.data.imports`,
    detected by extension and content, with the same kind of per-row problems.
    Raises :class:`DataError` only for the file as a whole: missing, a folder, unreadable, or UTF-16.
    """
    from tailored.data.imports import import_layout, read_import

    path = Path(path)
    layout = import_layout(path, format)
    if layout is not None:
        return read_import(path, layout)
    if format != "auto" and format not in FORMATS:
        raise DataError(f"--format {format!r} is not supported", hint=f"use auto or one of: {', '.join(FORMATS)}")
    result = ReadResult(format=format)
    for n, obj, problem in iter_json(path, max_line_bytes=max_line_bytes):
        result.n_lines += 1
        if problem is not None:
            result.problems.append(problem)
            continue
        if not isinstance(obj, dict):
            result.problems.append(Problem(n, "not_an_object", f"expected a JSON object, got {type(obj).__name__}"))
            continue
        looks = detect_format(obj)
        if result.format == "auto":
            if looks is None:
                result.problems.append(Problem(n, "missing_messages_list", f"unknown format (keys {_short(sorted(obj))}); expected 'messages'"))
                continue
            result.format = looks
        elif looks is not None and looks != result.format and not (result.format == "text" and looks == "text"):
            result.problems.append(Problem(n, "format_mismatch", f"this line looks like {looks}, the file is {result.format}"))
            continue
        example = parse_line(obj, result.format, n, result.problems)
        if example is not None:
            result.examples.append(example)
    if result.n_lines == 0:
        result.problems.append(Problem(0, "empty_file", "the file has no examples"))
    if result.format == "auto":
        result.format = "chat"
    return result


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically (streamed into a temporary file renamed into place)."""
    with atomic_open(path) as f:
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def example_to_chat(example: Example) -> dict[str, Any]:
    """The OpenAI chat form of an Example (what ``data convert --to chat`` writes)."""
    if example.text is not None:
        return {"text": example.text}
    row: dict[str, Any] = {"messages": example.messages}
    if example.tools:
        row["tools"] = example.tools
    return row
