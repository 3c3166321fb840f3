"""Tokenize examples through the model's own chat template, labelling exactly the trained tokens.

Labels cover every assistant turn (unless its ``weight`` is 0) *including* the turn's end-of-turn
token, so the model learns to stop. System, user and tool tokens are never labelled.

Why not ``apply_chat_template(return_assistant_tokens_mask=True)``: it needs ``{% generation %}``
markers, which most templates (SmolLM2's included) lack, and then silently returns all zeros. We
render the conversation prefix by prefix instead: the assistant turn ``i`` spans from the end of
``render(messages[:i], add_generation_prompt=True)`` to the end of ``render(messages[:i+1])``. The
character spans are mapped to tokens with the fast tokenizer's offsets, so the labels are exact
even where tokens would merge across a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tailored.data.records import Example
from tailored.data.stops import stop_token_ids
from tailored.errors import DataError

IGNORE = -100


@dataclass
class Encoded:
    line: int
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class EncodeStats:
    """What tokenization did to the data: nothing is dropped or cut without being counted here."""

    kept: int = 0
    dropped_too_long: list[tuple[int, int]] = field(default_factory=list)  # (line, n_tokens)
    truncated: list[tuple[int, int]] = field(default_factory=list)
    dropped_no_labels: list[int] = field(default_factory=list)

    def summary(self, max_seq_length: int) -> str | None:
        parts = []
        if self.dropped_too_long:
            lines = ", ".join(str(line) for line, _ in self.dropped_too_long[:10])
            more = "" if len(self.dropped_too_long) <= 10 else f" and {len(self.dropped_too_long) - 10} more"
            parts.append(f"skipped {len(self.dropped_too_long)} example(s) longer than max_seq_length={max_seq_length} (lines {lines}{more})")
        if self.truncated:
            lines = ", ".join(str(line) for line, _ in self.truncated[:10])
            parts.append(f"truncated {len(self.truncated)} example(s) to max_seq_length={max_seq_length} (lines {lines})")
        if self.dropped_no_labels:
            parts.append(f"skipped {len(self.dropped_no_labels)} example(s) with no trained token after truncation (lines "
                         + ", ".join(map(str, self.dropped_no_labels[:10])) + ")")
        return "; ".join(parts) or None


def render(tokenizer: Any, messages: list[dict[str, Any]], *, tools: Any = None, add_generation_prompt: bool = False) -> str:
    """The chat template applied as text."""
    msgs = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
    if tools:
        kwargs["tools"] = tools
    return tokenizer.apply_chat_template(msgs, **kwargs)


def assistant_spans(tokenizer: Any, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its trained assistant turns."""
    msgs = example.messages
    full = render(tokenizer, msgs, tools=example.tools)
    spans = []
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant" or m.get("weight", 1) == 0:
            continue
        before = render(tokenizer, msgs[:i], tools=example.tools, add_generation_prompt=True) if i else ""
        upto = render(tokenizer, msgs[: i + 1], tools=example.tools)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise DataError(
                f"line {example.line}: the chat template is not prefix-stable (rendering the first {i + 1} messages "
                "is not a prefix of the whole conversation), so assistant tokens cannot be located exactly",
                hint="use a template that renders earlier turns identically, or pass single-turn data",
            )
        spans.append((len(before), len(upto)))
    return full, spans


def encode_example(tokenizer: Any, example: Example) -> Encoded:
    """Token ids and labels for one example (no truncation)."""
    if example.text is not None:
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"]
        bos = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None else []
        ids = bos + ids + [tokenizer.eos_token_id]
        return Encoded(example.line, ids, [IGNORE] * len(bos) + ids[len(bos):])
    full, spans = assistant_spans(tokenizer, example)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    for j, (start, end) in enumerate(offsets):
        if end > start and any(s <= start < e for s, e in spans):
            labels[j] = ids[j]
    return Encoded(example.line, list(ids), labels)


def check_stops(tokenizer: Any, encoded: Encoded) -> None:
    """Fail loudly if the trained tokens contain no end-of-turn token: the model would never stop."""
    stops = stop_token_ids(tokenizer)
    if encoded.n_labels and not any(t in stops for t in encoded.labels if t != IGNORE):
        raise DataError(
            f"line {encoded.line}: the trained tokens contain no end-of-turn/EOS token, so the model would never learn to stop",
            hint="use a chat template that closes assistant turns with the tokenizer's EOS token",
        )


def encode_all(
    tokenizer: Any, examples: Iterable[Example], *, max_seq_length: int, overlength: str = "drop",
    encoded: list[Encoded] | None = None,
) -> tuple[list[Encoded], EncodeStats]:
    """Encode every example; ``overlength`` is ``drop`` (default), ``truncate`` or ``error``.

    ``encoded`` (one per example, e.g. from the data check) skips tokenizing again.
    """
    stats = EncodeStats()
    out: list[Encoded] = []
    checked_stop = False
    examples = list(examples)
    if encoded is None or len(encoded) != len(examples):
        encoded = [encode_example(tokenizer, ex) for ex in examples]
    for ex, enc in zip(examples, encoded):
        if not checked_stop and enc.n_labels:
            check_stops(tokenizer, enc)
            checked_stop = True
        if len(enc) > max_seq_length:
            if overlength == "error":
                raise DataError(
                    f"line {ex.line}: {len(enc)} tokens, more than max_seq_length={max_seq_length}",
                    hint="raise max_seq_length, shorten the example, or set overlength: drop|truncate",
                )
            if overlength == "drop":
                stats.dropped_too_long.append((ex.line, len(enc)))
                continue
            stats.truncated.append((ex.line, len(enc)))
            enc = Encoded(enc.line, enc.input_ids[:max_seq_length], enc.labels[:max_seq_length])
        if enc.n_labels == 0:
            stats.dropped_no_labels.append(ex.line)
            continue
        out.append(enc)
    stats.kept = len(out)
    return out, stats
