"""Batched answers with a progress bar, and the loss/perplexity of reference answers.

Answers come from :meth:`ChatModel.generate_batch` (greedy by default), in batches of similar
prompt length so little compute goes to padding. Reference loss uses the training code's own
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
    """One answer per conversation, generated in length-sorted batches, returned in input order."""
    lengths = [len(model.prompt_ids(c)) for c in conversations]
    order = sorted(range(len(conversations)), key=lambda i: lengths[i])
    out: list[str] = [""] * len(conversations)
    bar = Progress(label, len(conversations), unit="answer", enabled=progress, transient=True)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch_settings = settings
            if settings.seed is not None:  # sampled runs stay reproducible whatever the batch split
                batch_settings = GenerationSettings(**{**settings.__dict__, "seed": settings.seed + start})
            for i, text in zip(idx, model.generate_batch([conversations[i] for i in idx], batch_settings)):
                out[i] = text.strip()
            bar.advance(len(idx))
    finally:
        bar.close()
    return out


def reference_loss(model: ChatModel, examples: list[Example], *, max_seq_length: int = 2048,
                   micro_batch_tokens: int = 4096) -> dict[str, float]:
    """Mean token loss and perplexity of the reference assistant answers (assistant tokens only)."""
    rows, _ = encode_all(model.tokenizer, examples, max_seq_length=max_seq_length, overlength="truncate")
    held = evaluate_loss(model.model, rows, pad_id=int(model.tokenizer.pad_token_id), micro_batch_tokens=micro_batch_tokens)
    return {"loss": held.loss, "perplexity": held.perplexity, "tokens": held.tokens}
