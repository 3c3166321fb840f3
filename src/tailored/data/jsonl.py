"""Reading JSONL: lines end at ``\\n`` only, the file is streamed, and no line may exceed ``max_line_bytes``.

Every JSONL reader goes through here. ``str.splitlines()`` is not used anywhere for that: it also breaks
at U+2028, U+2029, U+0085 and other characters that are legal raw inside JSON strings (and are written
raw by ``json.dumps(..., ensure_ascii=False)``), so it cuts valid lines in two. Reading a whole file at
once holds it in memory several times over; here memory is bounded by the longest line allowed.

A trailing ``\\r`` (CRLF files) and a leading UTF-8 byte-order mark (files made by concatenation may
have one per part) are not part of a line. Each line is decoded and parsed on its own, so one bad line
is one :class:`Problem` and never costs the lines around it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tailored.data.records import Problem
from tailored.errors import DataError

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_LINE_BYTES_HELP = (f"Longest line read, in bytes; a longer one is refused by its line number "
                       f"[default: {DEFAULT_MAX_LINE_BYTES} (8 MiB)].")
BLANK = b" \t\r"  # JSON whitespace, less the line end
_BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 << 20
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


# Problems of lines that could not be read as JSON at all (their text is all there is to show).
UNREADABLE = ("line_too_long", "not_utf8", "invalid_json", "invalid_unicode")


@dataclass(frozen=True)
class RawLine:
    """One line of a file: its 1-based ``number``, its bytes without the line end, its ``size`` and ``offset`` in bytes.

    ``data`` is None when the line is longer than the limit (its bytes were skipped, not kept; see :func:`copy_line`).
    """

    number: int
    data: bytes | None
    size: int
    offset: int = 0

    @property
    def blank(self) -> bool:
        return self.data is not None and not self.data.strip(BLANK)

    def text(self) -> str:
        """The line as text, undecodable bytes written as ``\\xNN`` (for reports: the bytes are never lost)."""
        return "" if self.data is None else self.data.decode("utf-8", errors="backslashreplace")


def _open_problem(path: Path) -> DataError | None:
    if path.is_dir():
        return DataError(f"{path} is a folder, not a file", hint="pass the JSONL file inside it")
    if not path.is_file():
        return DataError(f"{path}: no such file", hint="check the path")
    return None


def iter_lines(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[RawLine]:
    """Every line of ``path`` (blank ones included, so numbers match the file), in memory bounded by the limit."""
    path = Path(path)
    problem = _open_problem(path)
    if problem is not None:
        raise problem
    if max_line_bytes < 1:
        raise DataError(f"max_line_bytes {max_line_bytes}: must be at least 1", hint=MAX_LINE_BYTES_HELP)
    return _lines(path, max_line_bytes)


def _lines(path: Path, limit: int) -> Iterator[RawLine]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})", hint="check the file's permissions") from None
    with f:
        head = f.peek(2)[:2]
        if head in (b"\xff\xfe", b"\xfe\xff"):
            raise DataError(f"{path} is UTF-16 text", hint="re-save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
        number = offset = 0
        while True:
            data = f.readline(limit + 1)  # binary readline ends at b"\n" only
            if not data:
                return
            number, start = number + 1, offset
            offset += len(data)
            if data.endswith(b"\n"):
                data = data[:-1]
            elif len(data) > limit:  # longer than the limit: skip to its end without keeping it
                size = len(data)
                while True:
                    rest = f.readline(_SKIP_CHUNK)
                    offset += len(rest)
                    if not rest or rest.endswith(b"\n"):
                        size += len(rest) - rest.endswith(b"\n")
                        break
                    size += len(rest)
                yield RawLine(number, None, size, start)
                continue
            data = data.removesuffix(b"\r").removeprefix(_BOM)
            yield RawLine(number, data, len(data), start)


def copy_line(path: str | Path, line: RawLine, out: BinaryIO) -> None:
    """Write ``line`` of ``path`` and a ``\\n`` to ``out``, in chunks (for a line over the limit, whose bytes were not kept)."""
    if line.data is not None:
        out.write(line.data + b"\n")
        return
    with open(path, "rb") as f:
        f.seek(line.offset)
        left = line.size
        while left > 0 and (chunk := f.read(min(left, _SKIP_CHUNK))):
            out.write(chunk)
            left -= len(chunk)
    out.write(b"\n")


def decode_line(line: RawLine, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> tuple[Any, Problem | None]:
    """The JSON value of a non-blank line, or the :class:`Problem` that keeps it from being read."""
    n = line.number
    if line.data is None:
        return None, Problem(n, "line_too_long", f"{line.size:,} bytes, more than max_line_bytes {max_line_bytes:,}: "
                                                 "split it into smaller examples, or raise --max-line-bytes")
    try:
        text = line.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Problem(n, "not_utf8", f"not UTF-8 text (byte 0x{line.data[exc.start]:02x} at column {exc.start + 1}): "
                                            "re-save the file as UTF-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, Problem(n, "invalid_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return None, Problem(n, "invalid_json", "not valid JSON here: nested too deeply to read (keep it under 500 levels)")
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        return None, Problem(n, "invalid_json", f"not valid JSON here: {str(exc).split('; ')[0]}")
    if _SURROGATE_ESCAPE.search(line.data):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return None, Problem(n, "invalid_unicode", "a \\ud800-\\udfff escape without its pair is not a character: "
                                                       "fix or remove it")
        except RecursionError:
            return None, Problem(n, "invalid_json", "not valid JSON here: nested too deeply to read (keep it under 500 levels)")
    return value, None


def iter_json(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, Any, Problem | None]]:
    """``(line number, value, problem)`` for every non-blank line; ``value`` is None when ``problem`` is set."""
    for line in iter_lines(path, max_line_bytes=max_line_bytes):
        if not line.blank:
            value, problem = decode_line(line, max_line_bytes)
            yield line.number, value, problem


def iter_objects(path: str | Path, problems: list[Problem], *,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every line holding a JSON object; any other line becomes a problem."""
    for number, value, problem in iter_json(path, max_line_bytes=max_line_bytes):
        if problem is not None:
            problems.append(problem)
        elif not isinstance(value, dict):
            problems.append(Problem(number, "not_an_object", f"expected a JSON object, got {type(value).__name__}"))
        else:
            yield number, value


def read_json_rows(path: str | Path) -> list[Any]:
    """The readable lines of a JSONL file Tailored writes itself (``metrics.jsonl``); a missing file has none.

    A line that cannot be read (the one being written when a run was killed) is skipped.
    """
    if not Path(path).is_file():
        return []
    return [value for _, value, problem in iter_json(path) if problem is None]
