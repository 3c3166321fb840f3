"""Text-to-SQL scoring in SQLite: execution match, validity, exact match."""

from __future__ import annotations

import json

from tailored.eval.sql import extract_schema, extract_sql, normalize_sql, score_sql_one, sql_metrics

SCHEMA = ("CREATE TABLE movies (id INT, title VARCHAR(255), year INT, rating DECIMAL(3,2)); "
          "INSERT INTO movies VALUES (1, 'A', 2015, 5.5); INSERT INTO movies VALUES (2, 'B', 2016, 6.5); "
          "INSERT INTO movies VALUES (3, 'C', 2017, 4.5);")
GOLD = "SELECT title FROM movies WHERE rating > 5;"


def test_execution_match_ignores_form_but_not_result() -> None:
    same_rows = score_sql_one(SCHEMA, "select title from movies where rating >= 5.5 order by id desc", GOLD)
    assert same_rows["execution_match"] and same_rows["valid"] and not same_rows["exact_match"]
    wrong = score_sql_one(SCHEMA, "SELECT title FROM movies;", GOLD)
    assert wrong["valid"] and not wrong["execution_match"]
    broken = score_sql_one(SCHEMA, "SELEC title FROM movies", GOLD)
    assert not broken["valid"] and not broken["execution_match"]
    exact = score_sql_one(SCHEMA, "select title  from movies where rating>5", GOLD)
    assert exact["exact_match"] and exact["execution_match"]


def test_order_matters_only_when_gold_orders() -> None:
    gold = "SELECT title FROM movies ORDER BY rating DESC"
    assert score_sql_one(SCHEMA, "SELECT title FROM movies ORDER BY rating DESC", gold)["execution_match"]
    assert not score_sql_one(SCHEMA, "SELECT title FROM movies ORDER BY rating ASC", gold)["execution_match"]


def test_runaway_query_is_stopped() -> None:
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
    out = score_sql_one(SCHEMA, slow, GOLD, timeout_s=0.2)
    assert not out["valid"]


def test_extractors() -> None:
    prompt = f"Schema:\n{SCHEMA}\n\nQuestion: Which movies are rated above 5?"
    assert extract_schema(prompt) == SCHEMA
    assert extract_schema("no schema here") is None
    assert extract_sql("```sql\nSELECT 1;\n```\nThis query returns one.") == "SELECT 1;"
    assert extract_sql("SELECT 2; -- and more text") == "SELECT 2;"
    assert normalize_sql("SELECT  a , b FROM t ;") == normalize_sql("select a,b from t")


def test_gold_queries_of_the_shared_set_score_perfectly(shared_data) -> None:
    rows = [json.loads(line) for line in (shared_data / "text-to-sql" / "validation.jsonl").read_text().splitlines()[:40]]
    schemas = [extract_schema(r["messages"][1]["content"]) for r in rows]
    golds = [r["messages"][2]["content"] for r in rows]
    assert all(schemas)
    m = sql_metrics(schemas, golds, golds)
    assert m["execution_accuracy"] == 1.0 and m["valid_sql_rate"] == 1.0 and m["exact_match"] == 1.0
    shifted = sql_metrics(schemas, golds, golds[1:] + golds[:1])  # answers to the wrong questions
    assert shifted["execution_accuracy"] < 0.3
