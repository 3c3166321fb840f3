"""``data clean``: remove what hurts training, and write down every removal with its reason and line.

Reasons, checked in this order (an example is removed for the first that applies):

- ``invalid``: the line cannot be read (bad JSON, unknown keys, no assistant message, ...).
- ``empty_turn``: a turn is empty or whitespace-only.
- ``empty_answer``: an assistant turn is empty or whitespace-only.
- ``encoding_garbage``: mojibake, U+FFFD replacement characters or control characters.
- ``answer_repeats_prompt``: the assistant turn is the user turn again (normalised).
- ``too_long``: more tokens than ``max_seq_length`` (only with a tokenizer).
- ``exact_duplicate``: the same conversation as an earlier line.
- ``near_duplicate``: an edited copy of an earlier kept line (MinHash/LSH, see :mod:`near_dup`).

Kept lines are copied byte for byte (the file keeps its format; line ends become ``\\n``). ``keep`` names
reasons to report but not remove. Nothing disappears without a trace: each removal is one row of the side
file, with the line as it was (undecodable bytes as ``\\xNN``; a line over ``max_line_bytes`` by its size only).
The input is streamed: memory grows with the examples, and no line costs more than ``max_line_bytes``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.config.files import atomic_open
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES, UNREADABLE, copy_line, iter_lines
from tailored.data.near_dup import DEFAULT_THRESHOLD, NearDupIndex
from tailored.data.readers import read_records, write_jsonl
from tailored.data.records import Example, Problem
from tailored.data.text_quality import garbage_reason, normalize
from tailored.errors import DataError

REASONS = ("invalid", "empty_turn", "empty_answer", "encoding_garbage", "answer_repeats_prompt", "too_long",
           "exact_duplicate", "near_duplicate")
_ANSWER_KEYS = ("completion", "output", "preferred_output", "non_preferred_output")


@dataclass
class Removal:
    line: int
    reason: str
    detail: str
    kept: bool = False  # flagged, but its reason was in ``keep``

    def to_row(self, raw: str | None, readable: bool = True) -> dict[str, Any]:
        """The side-file row: the record parsed when the line is ``readable`` JSON, else its text (None: too long)."""
        record: Any = raw
        if readable and raw is not None:
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                record = raw
        return {"line": self.line, "reason": self.reason, "detail": self.detail, "kept": self.kept, "record": record}


@dataclass
class CleanReport:
    input: str
    output: str
    removed_file: str
    n_lines: int
    n_kept: int
    flags: list[Removal] = field(default_factory=list)

    def counts(self, kept: bool = False) -> dict[str, int]:
        c = Counter(f.reason for f in self.flags if f.kept == kept)
        return {r: c[r] for r in REASONS if c[r]}

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "removed_file": self.removed_file, "lines": self.n_lines,
                "kept": self.n_kept, "removed": self.counts(), "flagged_but_kept": self.counts(kept=True)}

    def render(self) -> str:
        removed = sum(self.counts().values())
        out = [f"{self.input}: {self.n_lines} lines → kept {self.n_kept}, removed {removed} → {self.output}"]
        for reason, n in self.counts().items():
            lines = [str(f.line) for f in self.flags if f.reason == reason and not f.kept]
            out.append(f"  {reason:22} {n:5d}  (lines {', '.join(lines[:8])}{' …' if len(lines) > 8 else ''})")
        for reason, n in self.counts(kept=True).items():
            out.append(f"  {reason:22} {n:5d}  flagged, kept (--keep {reason})")
        out.append(f"every removal, with its line and reason: {self.removed_file}")
        return "\n".join(out)


def _classify_problem(category: str, message: str, raw: str) -> str:
    if category != "missing_content":
        return "invalid"
    m = re.search(r"messages\[(\d+)\]", message)
    if m:
        try:
            obj = json.loads(raw)
            msgs, i = obj.get("messages") or obj.get("conversations") or [], int(m.group(1))
            if "conversations" in obj and str(obj.get("system") or "").strip():
                i -= 1  # the reader put the sharegpt system prompt first
            role = msgs[i].get("role") or msgs[i].get("from")
            return "empty_answer" if str(role).lower() in ("assistant", "gpt", "model") else "empty_turn"
        except (ValueError, IndexError, AttributeError, TypeError, KeyError, RecursionError):
            return "empty_turn"
    return "empty_answer" if any(repr(k) in message for k in _ANSWER_KEYS) else "empty_turn"


def _user_text(ex: Example) -> str:
    return "\n".join(str(m.get("content") or "") for m in ex.messages if m.get("role") == "user")


def dedupe_text(ex: Example) -> str:
    """What near-duplicates compare: every turn except the system prompt (often shared by all lines)."""
    if ex.text is not None:
        return ex.text
    parts = [str(m.get("content") or "") for m in ex.messages if m.get("role") != "system"]
    for answer in (ex.chosen or []) + (ex.rejected or []):
        parts.append(str(answer.get("content") or ""))
    return "\n".join(parts)


def _quality_reason(ex: Example, tokenizer: Any, max_seq_length: int | None) -> tuple[str, str] | None:
    contents = [ex.text] if ex.text is not None else [str(m.get("content") or "") for m in ex.messages + (ex.chosen or []) + (ex.rejected or [])]
    for text in contents:
        why = garbage_reason(text)
        if why:
            return "encoding_garbage", why
    user, answer = normalize(_user_text(ex)), normalize(ex.assistant_text())
    if ex.text is None and user and user == answer:
        return "answer_repeats_prompt", "the assistant turn repeats the user turn"
    if tokenizer is not None and max_seq_length:
        from tailored.data.tokenize import encode_example

        n = len(encode_example(tokenizer, ex))
        if n > max_seq_length:
            return "too_long", f"{n} tokens > max_seq_length {max_seq_length}"
    return None


def clean_file(
    path: str | Path,
    output: str | Path,
    *,
    removed_path: str | Path | None = None,
    keep: tuple[str, ...] | list[str] = (),
    near_threshold: float = DEFAULT_THRESHOLD,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    format: str = "auto",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> CleanReport:
    """Clean ``path`` into ``output``; write every removal to ``removed_path`` (default ``OUTPUT.removed.jsonl``).

    Args:
        path: input JSONL in any supported format.
        output: where the kept lines go (copied unchanged).
        removed_path: the side file; one row per flagged line: line, reason, detail, kept, record.
        keep: reasons to flag but not remove (e.g. ``["near_duplicate"]``).
        near_threshold: Jaccard similarity (character 5-grams) from which two examples are near-duplicates;
            1.0 disables near-duplicate detection.
        tokenizer: with ``max_seq_length``, examples longer than the context are removed.
        max_seq_length: the context length in tokens.
        format: force the input format instead of auto-detecting it.
        max_line_bytes: longest line read; a longer one is removed as ``invalid``.
    """
    unknown = set(keep) - set(REASONS)
    if unknown:
        raise DataError(f"--keep {', '.join(sorted(unknown))}: unknown reason", hint=f"reasons: {', '.join(REASONS)}")
    path, output = Path(path), Path(output)
    if path.resolve() == output.resolve():
        raise DataError(f"--output {output} is the input file", hint="write the cleaned data to a new file")
    removed_path = Path(removed_path) if removed_path else output.with_name(output.stem + ".removed.jsonl")
    read = read_records(path, format=format, max_line_bytes=max_line_bytes)
    problems: dict[int, Problem] = {}
    for p in read.problems:
        if p.line and p.severity == "error":
            problems.setdefault(p.line, p)
    flagged: dict[int, Removal] = {}
    exact: dict[str, int] = {}
    index = NearDupIndex(near_threshold) if near_threshold < 1.0 else None
    for ex in read.examples:
        found = _quality_reason(ex, tokenizer, max_seq_length)
        if found is None and ex.key() in exact:
            found = ("exact_duplicate", f"same as line {exact[ex.key()]}")
        if found is None and index is not None:
            hits = index.query(dedupe_text(ex))
            if hits:
                found = ("near_duplicate", f"near-duplicate of line {hits[0][0]} (Jaccard {hits[0][1]:.2f})")
        if found is not None:
            flagged[ex.line] = Removal(ex.line, *found)
            if found[0] not in keep:
                continue
        exact.setdefault(ex.key(), ex.line)
        if index is not None and ex.line not in index:
            index.add(ex.line, dedupe_text(ex))
    rows, n_kept = [], 0
    with atomic_open(output) as out:  # a second pass, in file order: classify unreadable lines, copy kept ones
        for raw in iter_lines(path, max_line_bytes=max_line_bytes):
            if raw.blank:
                continue
            problem = problems.get(raw.number)
            if problem is not None:
                reason = _classify_problem(problem.category, problem.message, raw.text())
                flagged[raw.number] = Removal(raw.number, reason, f"{problem.category}: {problem.message}")
            flag = flagged.get(raw.number)
            if flag is not None:
                flag.kept = flag.reason in keep
                readable = problem is None or problem.category not in UNREADABLE
                rows.append(flag.to_row(None if raw.data is None else raw.text(), readable))
                if not flag.kept:
                    continue
            copy_line(path, raw, out)
            n_kept += 1
    write_jsonl(removed_path, rows)
    flags = sorted(flagged.values(), key=lambda f: f.line)
    return CleanReport(str(path), str(output), str(removed_path), read.n_lines, n_kept, flags)
