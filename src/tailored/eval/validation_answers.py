"""The cheap part of the mode-collapse check, run after every training run: the tuned model's answers on
(a sample of) the run's own validation prompts, against the validation references.

A model trained on one repeated answer gives that answer to most validation prompts while the
references vary: that is collapse whatever the task, and it costs one short greedy generation over at
most :data:`MAX_PROMPTS` prompts (seconds on a CPU). Distinct-n and pairwise similarity of the answers
are compared with the references' own, so a task whose answers are legitimately alike (labels, SQL)
is not flagged for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tailored.config.manifest import Manifest
from tailored.data.readers import read_records
from tailored.eval.metrics import diversity

MAX_PROMPTS = 24
MAX_NEW_TOKENS = 64


def validation_prompts(manifest: Manifest, limit: int = MAX_PROMPTS) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """(prompts, references) of the run's validation examples (held out or a file), evenly sampled; empty without."""
    record = manifest.data.validation
    if record is None or not Path(record.path).is_file():
        return [], []
    examples = [e for e in read_records(record.path).examples if e.messages]
    if record.held_out == "auto":
        lines = set(record.lines)
        examples = [e for e in examples if e.line in lines]
    step = max(1, len(examples) // limit)
    prompts, refs = [], []
    for ex in examples[::step][:limit]:
        answers = [i for i, m in enumerate(ex.messages) if m.get("role") == "assistant"]
        if answers:
            prompts.append(ex.messages[: answers[-1]])
            refs.append(str(ex.messages[answers[-1]].get("content") or ""))
    return prompts, refs


def answers_on_validation(model: Any, manifest: Manifest) -> dict[str, Any] | None:
    """The tuned model's greedy answers to the validation prompts with their diversity, and the references'.

    Returns None when the run has no validation data.
    """
    from tailored.eval.generate import GenerationSettings

    prompts, refs = validation_prompts(manifest)
    if len(prompts) < 2:
        return None
    longest = max(len(model.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs)
    settings = GenerationSettings(max_new_tokens=min(MAX_NEW_TOKENS, int(1.5 * longest) + 8))
    answers: list[str] = []
    for i in range(0, len(prompts), 8):
        answers += model.generate_batch(prompts[i:i + 8], settings)
    return {"tuned": {**diversity(answers), "answers": answers}, "references": {**diversity(refs), "answers": refs}}
