"""Token logprobs as OpenAI's chat completions return them (``logprobs`` / ``top_logprobs``).

:class:`LogprobRecorder` is a :class:`~tailored.engine.hooks.RowHook` that sees a row's logits before
any constraint or sampling setting changes them: the logprobs are the model's own distribution
(vLLM's default, ``raw_logprobs``), so a classification fine-tune's confidence in a label is what the
model believes, whatever the temperature. Stop tokens are not reported (as OpenAI). :func:`openai_entries`
gives the JSON shape: ``{"token", "bytes", "logprob", "top_logprobs": [{"token", "bytes", "logprob"}]}``.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs
UNLIKELY = -9999.0  # OpenAI's value for a token of probability 0


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


class LogprobRecorder:
    """Records the chosen token's logprob and the ``top`` most likely tokens at each step of one row."""

    def __init__(self, top: int, stop_ids: set[int] | frozenset[int] = frozenset()) -> None:
        self.top, self.stop_ids = top, set(stop_ids)
        self.entries: list[TokenLogprob] = []
        self._sent = 0
        self._logprobs: torch.Tensor | None = None

    def process(self, logits: torch.Tensor) -> None:
        self._logprobs = torch.log_softmax(logits.detach().double(), dim=-1)

    def accept(self, token: int) -> None:
        lp = self._logprobs
        if lp is None or token in self.stop_ids:
            return
        top: list[tuple[int, float]] = []
        if self.top:
            values, ids = lp.topk(min(self.top, lp.shape[-1]))
            top = [(int(i), _finite(float(v))) for v, i in zip(values.tolist(), ids.tolist())]
        self.entries.append(TokenLogprob(token, _finite(float(lp[token])), top))
        self._logprobs = None

    def take(self) -> list[TokenLogprob]:
        """The entries recorded since the last call (a stream sends them with the text they produced)."""
        out, self._sent = self.entries[self._sent :], len(self.entries)
        return out


def _finite(value: float) -> float:
    return value if value > UNLIKELY else UNLIKELY


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_level_table() -> dict[str, int]:
    """GPT-2's map from the printable characters of a byte-level BPE vocabulary back to bytes."""
    table, n = {}, 0
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table


_TABLE = byte_level_table()
_BYTES: weakref.WeakKeyDictionary[Any, dict[int, bytes]] = weakref.WeakKeyDictionary()


def token_bytes(tokenizer: Any, token: int) -> bytes:
    """The bytes one token stands for: byte-level BPE pieces mapped back, ``<0xNN>`` byte tokens, else its text."""
    try:
        cache = _BYTES.setdefault(tokenizer, {})
    except TypeError:
        cache = {}
    if token not in cache:
        piece = tokenizer.convert_ids_to_tokens(token)
        if token in set(tokenizer.all_special_ids) or piece is None:
            raw = tokenizer.decode([token]).encode("utf-8")
        elif m := _BYTE_TOKEN.fullmatch(piece):
            raw = bytes([int(m.group(1), 16)])
        elif _byte_level(tokenizer) and all(ch in _TABLE for ch in piece):
            raw = bytes(_TABLE[ch] for ch in piece)
        else:
            raw = piece.replace("\u2581", " ").encode("utf-8")
        cache[token] = raw
    return cache[token]


def _byte_level(tokenizer: Any) -> bool:
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    return decoder is not None and "ByteLevel" in str(decoder)


def _one(tokenizer: Any, token: int, logprob: float) -> dict[str, Any]:
    raw = token_bytes(tokenizer, token)
    return {"token": raw.decode("utf-8", errors="replace"), "bytes": list(raw), "logprob": logprob}


def openai_entries(tokenizer: Any, entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    """``choices[i].logprobs.content`` items for ``entries``."""
    return [{**_one(tokenizer, e.token, e.logprob), "top_logprobs": [_one(tokenizer, t, lp) for t, lp in e.top]}
            for e in entries]
