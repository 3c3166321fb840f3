"""Test data for evaluation: read it, split prompt from reference, and recognise the task.

Tasks: ``classification`` (the reference answers are a small set of short labels), ``sql`` (the user
turn holds ``Schema:`` SQL statements), ``choice`` (``{question, choices, answer_index}`` lines) and
``generation`` (anything else).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailored.config.files import file_sha256
from tailored.data.readers import read_records
from tailored.data.records import Example
from tailored.errors import DataError
from tailored.eval.choice import is_choice_file
from tailored.eval.metrics import classification_metrics, generation_metrics, match_label, nearest_label
from tailored.eval.sql import extract_schema, sql_metrics

TASKS = ("auto", "classification", "generation", "sql", "choice")


@dataclass
class TestSet:
    path: Path
    sha256: str
    examples: list[Example]  # whole conversations (for reference loss)
    prompts: list[list[dict[str, Any]]]  # the conversation up to the last assistant turn
    references: list[str]  # the last assistant turn

    def user_texts(self) -> list[str]:
        return [next((str(m.get("content")) for m in reversed(p) if m.get("role") == "user"), "") for p in self.prompts]


def read_test_set(path: str | Path, limit: int | None = None) -> TestSet:
    """Read chat-like test data (any format ``tailored data check`` accepts, except plain text)."""
    result = read_records(path)
    bad = [p for p in result.problems if p.severity == "error"]
    if bad:
        lines = "; ".join(f"line {p.line}: {p.message}" for p in bad[:5])
        raise DataError(f"{path}: {len(bad)} invalid line(s): {lines}", hint=f"run `tailored data check {path}`")
    examples = [e for e in result.examples if e.messages]
    if not examples:
        raise DataError(f"{path}: no conversations to evaluate", hint="evaluation needs prompts with reference answers")
    prompts, refs = [], []
    for ex in examples[:limit] if limit else examples:
        last = max(i for i, m in enumerate(ex.messages) if m.get("role") == "assistant")
        prompts.append(ex.messages[:last])
        refs.append(str(ex.messages[last].get("content") or ""))
    examples = examples[: len(prompts)]
    return TestSet(Path(path), file_sha256(path), examples, prompts, refs)


def detect_task(path: str | Path, test: TestSet | None = None) -> str:
    """Guess the task from the data (see module docstring)."""
    if is_choice_file(path):
        return "choice"
    test = test or read_test_set(path)
    users = test.user_texts()
    if users and sum(extract_schema(u) is not None for u in users) >= 0.8 * len(users):
        return "sql"
    refs = [r.strip() for r in test.references]
    short = all(r and "\n" not in r and len(r.split()) <= 4 and len(r) <= 60 for r in refs)
    if short and len(refs) >= 4 and len(set(refs)) <= max(2, len(refs) // 2):
        return "classification"
    return "generation"


def read_labels(path: str | Path) -> list[str]:
    """A label list: a JSON array, or one label per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="--labels takes a JSON list or a file with one label per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text", hint="re-save the label file as UTF-8") from None
    try:
        labels = json.loads(text)
    except (ValueError, RecursionError):
        labels = [line.strip() for line in text.split("\n") if line.strip()]  # lines end at \n only
    if not isinstance(labels, list) or not labels:
        raise DataError(f"{path}: expected a JSON list of labels or one label per line", hint='e.g. ["refund", "billing"]')
    return [str(x) for x in labels]


def score(task: str, test: TestSet, answers: list[str], labels: list[str] | None = None) -> dict[str, Any]:
    """Task metrics of ``answers`` against the references (no model involved)."""
    if task == "classification":
        label_set = sorted(set(labels or []) | set(r.strip() for r in test.references))
        golds = [r.strip() for r in test.references]
        out = classification_metrics(golds, [match_label(a, label_set) for a in answers], label_set)
        # Secondary: answers outside the set mapped to the most similar label (a small model often
        # invents a near-miss such as "card_not_working"); the headline numbers stay exact-match.
        near = classification_metrics(golds, [nearest_label(a, label_set) for a in answers], label_set)
        out["accuracy_nearest_label"], out["macro_f1_nearest_label"] = near["accuracy"], near["macro_f1"]
        return out
    if task == "sql":
        schemas = [extract_schema(u) or "" for u in test.user_texts()]
        out = sql_metrics(schemas, test.references, answers)
        out.pop("items")
        return out
    return generation_metrics(test.references, answers)
