"""Text-to-SQL scoring in SQLite: execution accuracy, valid-SQL rate, normalised exact match.

The user turn carries ``Schema:\\n<CREATE/INSERT statements>\\n\\nQuestion: ...``. For each example
the schema runs in a fresh in-memory database; the predicted and the gold query run there too, and
the prediction counts as correct when both return the same multiset of rows (order ignored unless
the gold query has ORDER BY). Queries are interrupted after a time limit so a runaway join cannot
hang an evaluation.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from typing import Any, Sequence

SCHEMA_RE = re.compile(r"Schema:\s*\n(?P<schema>.*?)\n\s*\nQuestion:", re.S)


def extract_schema(user_text: str) -> str | None:
    """The SQL statements of a text-to-SQL prompt, or None when the prompt has none."""
    m = SCHEMA_RE.search(user_text)
    return m.group("schema").strip() if m else None


def extract_sql(answer: str) -> str:
    """The query in a model answer: the inside of a ```sql fence if any, else the text up to the first ';'."""
    fence = re.search(r"```(?:sql)?\s*(.*?)```", answer, re.S | re.I)
    text = fence.group(1) if fence else answer
    text = text.strip()
    if ";" in text:
        text = text[: text.index(";") + 1]
    return text


def normalize_sql(query: str) -> str:
    """Lower-case, single spaces, no trailing semicolon, spaces around punctuation unified."""
    q = re.sub(r"\s+", " ", query.strip().rstrip(";").strip().lower())
    q = re.sub(r"\s*([(),=<>])\s*", r"\1", q)
    return q


def _run(db: sqlite3.Connection, query: str, timeout_s: float) -> list[tuple] | None:
    deadline = time.monotonic() + timeout_s
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        return db.execute(query).fetchall()
    except (sqlite3.Error, sqlite3.Warning, ValueError):
        return None
    finally:
        db.set_progress_handler(None, 0)


def _same(pred: list[tuple], gold: list[tuple], ordered: bool) -> bool:
    def canon(rows: list[tuple]) -> list[tuple]:
        return [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]

    p, g = canon(pred), canon(gold)
    return p == g if ordered else Counter(p) == Counter(g)


def score_sql_one(schema: str, predicted: str, gold: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """Execution match, validity and normalised exact match of one predicted query."""
    db = sqlite3.connect(":memory:")
    try:
        try:
            db.executescript(schema)
        except sqlite3.Error as exc:
            return {"valid": False, "execution_match": False, "exact_match": False, "error": f"schema: {exc}"}
        query = extract_sql(predicted)
        gold_rows = _run(db, gold, timeout_s)
        pred_rows = _run(db, query, timeout_s) if query else None
        ordered = "order by" in gold.lower()
        return {
            "valid": pred_rows is not None,
            "execution_match": pred_rows is not None and gold_rows is not None and _same(pred_rows, gold_rows, ordered),
            "exact_match": normalize_sql(query) == normalize_sql(gold),
            "gold_ran": gold_rows is not None,
        }
    finally:
        db.close()


def sql_metrics(schemas: Sequence[str], golds: Sequence[str], preds: Sequence[str]) -> dict[str, Any]:
    """Execution accuracy, valid-SQL rate and normalised exact match over a set (plus per-item results)."""
    items = [score_sql_one(s, p, g) for s, g, p in zip(schemas, golds, preds)]
    n = max(len(items), 1)
    return {
        "n": len(items),
        "execution_accuracy": sum(i["execution_match"] for i in items) / n,
        "valid_sql_rate": sum(i["valid"] for i in items) / n,
        "exact_match": sum(i["exact_match"] for i in items) / n,
        "gold_failed": sum(not i.get("gold_ran", True) for i in items),
        "items": items,
    }
