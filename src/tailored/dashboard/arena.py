"""Blind A/B battles and their votes, in the jobs service's SQLite file; the leaderboard; votes as DPO pairs.

A battle is a prompt, two models in random left/right order (``a`` is the left one) and their
answers; its vote is ``a``, ``b``, ``tie`` or ``both_bad``. Every row belongs to a project, like
the service's own rows. Decisive votes (``a`` or ``b``) become preference pairs in OpenAI's DPO
format, which ``tailored train --method dpo`` and a ``dpo`` fine-tuning job read unchanged.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from typing import Any

from tailored.errors import NotFound, RequestError

VOTES = ("a", "b", "tie", "both_bad")
TABLES = (
    """CREATE TABLE IF NOT EXISTS arena_battles (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project TEXT NOT NULL,
        created_at INTEGER NOT NULL, messages TEXT NOT NULL, model_a TEXT NOT NULL, model_b TEXT NOT NULL,
        answer_a TEXT NOT NULL, answer_b TEXT NOT NULL, vote TEXT, voted_at INTEGER)""",
    "CREATE INDEX IF NOT EXISTS arena_battles_project ON arena_battles (project, seq)",
)


class Arena:
    """Battles and votes of every project, in ``store`` (a :class:`~tailored.jobs.store.Store`)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        with store.transaction() as db:
            for sql in TABLES:
                db.execute(sql)

    def add(self, project: str, messages: list[dict[str, Any]], models: tuple[str, str], answers: tuple[str, str]) -> str:
        from tailored.jobs.store import new_id, now

        battle_id = new_id("battle-", 16)
        with self.store.transaction() as db:
            db.execute("INSERT INTO arena_battles (id, project, created_at, messages, model_a, model_b, answer_a, answer_b)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (battle_id, project, now(), json.dumps(messages), *models, *answers))
        return battle_id

    def vote(self, project: str | None, battle_id: str, vote: str) -> dict[str, Any]:
        """Record the vote (once); returns the battle with the names revealed."""
        from tailored.jobs.store import now

        if vote not in VOTES:
            raise RequestError(f"vote {vote!r}: expected one of {', '.join(VOTES)}", param="vote")
        battle = self.battle(project, battle_id)
        if battle["vote"] is not None:
            raise RequestError(f"battle {battle_id} has its vote already ({battle['vote']})", param="battle",
                               code="already_voted")
        with self.store.transaction() as db:
            db.execute("UPDATE arena_battles SET vote = ?, voted_at = ? WHERE id = ?", (vote, now(), battle_id))
        return {**battle, "vote": vote}

    def battle(self, project: str | None, battle_id: str) -> dict[str, Any]:
        where, params = ("", ()) if project is None else (" AND project = ?", (project,))
        rows = self.store.query(f"SELECT * FROM arena_battles WHERE id = ?{where}", (battle_id, *params))
        if not rows:
            raise NotFound(f"No such battle: {battle_id}", param="battle", code="battle_not_found")
        return _battle(rows[0])

    def voted(self, project: str | None) -> list[dict[str, Any]]:
        where, params = ("", ()) if project is None else (" AND project = ?", (project,))
        rows = self.store.query(f"SELECT * FROM arena_battles WHERE vote IS NOT NULL{where} ORDER BY seq", params)
        return [_battle(r) for r in rows]


def _battle(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "project": row["project"], "created_at": row["created_at"],
            "messages": json.loads(row["messages"]), "models": [row["model_a"], row["model_b"]],
            "answers": [row["answer_a"], row["answer_b"]], "vote": row["vote"]}


# ---- the leaderboard ---------------------------------------------------------------------------
def _outcomes(votes: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(model, other, score of model): 1 a win, 0.5 a tie; a both-bad vote says nothing about the order."""
    out = []
    for v in votes:
        a, b = v["models"]
        if v["vote"] == "a":
            out.append((a, b, 1.0))
        elif v["vote"] == "b":
            out.append((a, b, 0.0))
        elif v["vote"] == "tie":
            out.append((a, b, 0.5))
    return out


def bradley_terry(outcomes: list[tuple[str, str, float]], models: list[str], *, prior: float = 0.5,
                  iterations: int = 200) -> dict[str, float]:
    """Bradley–Terry strengths by Hunter's MM updates, on an Elo-like scale (mean 1000, 400 per factor 10).

    ``prior`` adds that many virtual wins each way to every pair that met, so a model that never
    lost still gets a finite score.
    """
    wins: dict[tuple[str, str], float] = defaultdict(float)
    for a, b, s in outcomes:
        wins[(a, b)] += s
        wins[(b, a)] += 1 - s
    for a, b in list(wins):
        wins[(a, b)] += prior
    games: dict[tuple[str, str], float] = defaultdict(float)
    for (a, b), w in wins.items():
        games[(a, b)] += w
        games[(b, a)] += w
    p = {m: 1.0 for m in models}
    for _ in range(iterations):
        new = {}
        for m in models:
            w = sum(v for (x, _), v in wins.items() if x == m)
            denom = sum(n / (p[m] + p[o]) for (x, o), n in games.items() if x == m)
            new[m] = w / denom if denom > 0 and w > 0 else p[m]
        mean_log = sum(math.log(v) for v in new.values()) / len(new)
        p = {m: math.exp(math.log(v) - mean_log) for m, v in new.items()}
    return {m: 1000 + 400 * math.log10(v) for m, v in p.items()}


def leaderboard(votes: list[dict[str, Any]], *, rounds: int = 200, seed: int = 0) -> dict[str, Any]:
    """Per model: battles, wins, losses, ties, both bad, win rate (ties half), Bradley–Terry score and its 95% interval.

    The interval is a bootstrap over votes (``rounds`` resamples with replacement).
    """
    rows: dict[str, dict[str, Any]] = {}
    for v in votes:
        for side, model in enumerate(v["models"]):
            r = rows.setdefault(model, {"model": model, "battles": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0})
            r["battles"] += 1
            mine, theirs = ("a", "b") if side == 0 else ("b", "a")
            key = {mine: "wins", theirs: "losses", "tie": "ties", "both_bad": "both_bad"}[v["vote"]]
            r[key] += 1
    models = sorted(rows)
    outcomes = _outcomes(votes)
    scores = bradley_terry(outcomes, models) if models else {}
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {m: [] for m in models}
    if outcomes:
        for _ in range(rounds):
            boot = bradley_terry([rng.choice(outcomes) for _ in outcomes], models, iterations=60)
            for m in models:
                samples[m].append(boot[m])
    for m, r in rows.items():
        judged = r["wins"] + r["losses"] + r["ties"]
        r["win_rate"] = round((r["wins"] + 0.5 * r["ties"]) / judged, 3) if judged else None
        r["bt"] = round(scores[m], 1)
        s = sorted(samples[m])
        r["bt_low"], r["bt_high"] = (round(s[int(0.025 * len(s))], 1), round(s[min(len(s) - 1, int(0.975 * len(s)))], 1)) if s else (None, None)
    ranked = sorted(rows.values(), key=lambda r: -r["bt"])
    return {"data": ranked, "votes": len(votes), "decisive": sum(1 for v in votes if v["vote"] in ("a", "b")),
            "bootstrap_rounds": rounds if outcomes else 0}


def preference_rows(votes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(OpenAI preference-format rows from the decisive votes, how many were left out and why).

    A vote whose two answers are identical teaches nothing (``identical``); one with an empty answer would make
    the file invalid, since an empty assistant message is not a training target (``empty``: a model may stop at
    once when sampled)."""
    rows, left_out = [], {"identical": 0, "empty": 0}
    for v in votes:
        if v["vote"] not in ("a", "b"):
            continue
        win, lose = (0, 1) if v["vote"] == "a" else (1, 0)
        if not v["answers"][win].strip() or not v["answers"][lose].strip():
            left_out["empty"] += 1
        elif v["answers"][win].strip() == v["answers"][lose].strip():
            left_out["identical"] += 1
        else:
            rows.append({"input": {"messages": v["messages"]},
                         "preferred_output": [{"role": "assistant", "content": v["answers"][win]}],
                         "non_preferred_output": [{"role": "assistant", "content": v["answers"][lose]}]})
    return rows, left_out
