"""Batched answers with a progress bar, and the loss/perplexity of reference answers.

Answers come from :meth:`ChatModel.generate_batch` (greedy by default): the step engine keeps
``batch_size`` answers decoding, shortest prompts first, and shares prompt prefixes between them. Reference loss uses the training code's own
tokenization (assistant-only labels) and held-out loss (``train.loop.evaluate_loss``), so it is the
same number training reports.
"""

from __future__ import annotations

from typing import Any

from tailored.data.records import Example
from tailored.data.tokenize import encode_all
from tailored.eval.generate import ChatModel, GenerationSettings
from tailored.train.loop import evaluate_loss
from tailored.train.progress import Progress


def generate_answers(model: ChatModel, conversations: list[list[dict[str, Any]]], settings: GenerationSettings, *,
                     batch_size: int = 8, label: str = "generate", progress: bool = True) -> list[str]:
    """One answer per conversation, returned in input order."""
    out: list[str] = [""] * len(conversations)
    bar = Progress(label, len(conversations), unit="answer", enabled=progress, transient=True)

    def done(i: int, text: str) -> None:
        out[i] = text.strip()
        bar.advance(1)

    try:  # one call: the engine keeps batch_size rows decoding, refilled as answers finish
        model.generate_batch(conversations, settings, max_rows=batch_size, on_answer=done)
    finally:
        bar.close()
    return out


def ranked_answers(model: ChatModel, conversations: list[list[dict[str, Any]]], labels: list[str], *,
                   label: str = "rank labels", progress: bool = True) -> list[str]:
    """The most probable of ``labels`` after each conversation (:func:`tailored.eval.ranking.rank_labels`)."""
    bar = Progress(label, len(conversations), unit="answer", enabled=progress, transient=True)
    try:
        answers, _ = model.rank_labels(conversations, labels, on_progress=bar.advance)
    finally:
        bar.close()
    return answers


def reference_loss(model: ChatModel, examples: list[Example], *, max_seq_length: int = 2048,
                   micro_batch_tokens: int = 4096) -> dict[str, float]:
    """Mean token loss and perplexity of the reference assistant answers (assistant tokens only)."""
    rows, _ = encode_all(model.tokenizer, examples, max_seq_length=max_seq_length, overlength="truncate")
    held = evaluate_loss(model.model, rows, pad_id=int(model.tokenizer.pad_token_id), micro_batch_tokens=micro_batch_tokens)
    return {"loss": held.loss, "perplexity": held.perplexity, "tokens": held.tokens}
