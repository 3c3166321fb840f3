"""Record types shared by every reader, validator and tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
FORMATS = ("chat", "prompt_completion", "alpaca", "sharegpt", "text", "preference")

Messages = list[dict[str, Any]]


@dataclass
class Example:
    """One training example, always in chat form (or plain text for ``text`` data).

    ``line`` is the 1-based line of the source file it came from, so every later message
    (validation, truncation, removal) can point back at it.
    """

    line: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    text: str | None = None
    # Preference data (DPO): ``messages`` is the prompt; these are the two candidate answers.
    chosen: list[dict[str, Any]] | None = None
    rejected: list[dict[str, Any]] | None = None

    def assistant_text(self) -> str:
        """The trained assistant turns joined (used for labels, duplicates and statistics)."""
        if self.text is not None:
            return self.text
        return "\n".join(
            str(m.get("content") or "") for m in self.messages if m.get("role") == "assistant" and m.get("weight", 1) != 0
        )

    def key(self) -> str:
        """A canonical string of the whole example (for exact-duplicate detection and hashing)."""
        import json

        if self.text is not None:
            return self.text
        return json.dumps([[m.get("role"), m.get("content")] for m in self.messages], ensure_ascii=False)


@dataclass
class Problem:
    """A problem with one line (``line`` 0 means the whole file).

    Tables and labelling exports count in their own units: ``unit`` is ``row`` (the row number a
    spreadsheet shows, header = row 1) or ``task`` (a Label Studio task id), and ``column`` names the cell.
    """

    line: int
    category: str
    message: str
    severity: str = "error"  # "error" or "warning"
    column: str | None = None
    unit: str = "line"

    @property
    def where(self) -> str:
        """Where the problem is, as the user finds it: ``line 7``, ``row 7, column 'label'``, ``task 12``."""
        return f"{self.unit} {self.line}" + (f", column {self.column!r}" if self.column else "")


def last_user(prompt: Messages) -> str:
    """The content of the last user turn ("" without one)."""
    return next((str(m.get("content") or "") for m in reversed(prompt) if m.get("role") == "user"), "")


def with_system(prompt: Messages, extra: str, default_system: str | None) -> Messages:
    """``prompt`` with ``extra`` appended to its system message (one is added when it has none)."""
    msgs = [dict(m) for m in prompt]
    if msgs and msgs[0].get("role") == "system":
        msgs[0]["content"] = (str(msgs[0].get("content") or "") + ("\n\n" + extra if extra else "")).strip()
    elif default_system or extra:
        msgs.insert(0, {"role": "system", "content": "\n\n".join(x for x in (default_system, extra) if x)})
    return msgs
