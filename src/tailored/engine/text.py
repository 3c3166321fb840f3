"""Token ids in, printable text out: stop tokens, stop strings and unfinished UTF-8 characters held back."""

from __future__ import annotations

from typing import Any


class TextStream:
    """Token ids in, printable text deltas out; finds stop tokens and stop strings."""

    def __init__(self, tokenizer: Any, stop_ids: set[int], stop: list[str]) -> None:
        self.tokenizer, self.stop_ids, self.stop = tokenizer, stop_ids, [s for s in stop if s]
        self.tokens: list[int] = []
        self.sent = 0  # characters already emitted
        self.count = 0  # generated tokens, including a final stop token

    def add(self, token: int, limit: int) -> tuple[str, str | None]:
        """Add one generated token; returns (text to emit now, finish reason or None)."""
        self.count += 1
        if token in self.stop_ids:
            return self._flush(self._text()), "stop"
        self.tokens.append(token)
        text = self._text()
        for s in self.stop:
            if s in text:
                return self._flush(text[: text.index(s)]), "stop"
        if self.count >= limit:
            return self._flush(text), "length"
        end = len(text) - self._held_back(text)
        if end <= self.sent:
            return "", None
        delta, self.sent = text[self.sent : end], end
        return delta, None

    def _text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def _flush(self, text: str) -> str:
        delta, self.sent = text[self.sent :], max(self.sent, len(text))
        return delta

    def _held_back(self, text: str) -> int:
        """Characters at the end that may still change: a partial UTF-8 char or a stop string's prefix."""
        hold = 1 if text.endswith("\ufffd") else 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return hold
