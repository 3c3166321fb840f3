"""The verdict of a comparison: which strategy to use, and why, from the measured rows only.

Rule: the strategy with the best headline quality wins, unless others lie within its 95% interval
(a tie at this test size); among those, the cheapest per request wins. Reasons quote the numbers:
the margin over the runner-up, the cost ratio, when training pays for itself, red flags.
"""

from __future__ import annotations

from typing import Any

from tailored.compare.costs import payback


def kind(row: dict[str, Any]) -> str:
    return "fine-tuned" if row["name"].startswith("fine-tuned") else row["name"]


def _cost(row: dict[str, Any]) -> tuple[float, float]:
    c = row["cost_per_1k"]
    return c["gpu_usd"], c["here_seconds"]


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _points(d: float) -> str:
    return f"{100 * d:+.1f} points"


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    rows = report["strategies"]
    metric = rows[0]["quality"]["metric"]
    by_quality = sorted(rows, key=lambda r: (-r["quality"]["value"], _cost(r)))
    best = by_quality[0]
    tied = [r for r in rows if r["quality"]["value"] >= best["quality"]["ci_low"]]
    winner = min(tied, key=_cost)
    q = winner["quality"]
    reasons = [f"{winner['name']}: {metric} {_pct(q['value'])} (95% interval {_pct(q['ci_low'])}–{_pct(q['ci_high'])}, "
               f"{q['n']} test examples)"]
    others = [r for r in by_quality if kind(r) != kind(winner)]
    runner = others[0] if others else None
    if runner is not None:
        d = q["value"] - runner["quality"]["value"]
        if winner is best and runner["quality"]["value"] < q["ci_low"]:
            reasons.append(f"{_points(d)} over {runner['name']} ({_pct(runner['quality']['value'])}), outside the noise of this test size")
        elif winner is best:
            reasons.append(f"{_points(d)} over {runner['name']} ({_pct(runner['quality']['value'])}), within the noise of "
                           f"{q['n']} examples: the cheaper one per request is preferred")
        else:
            reasons.append(f"within the noise of the best, {best['name']} ({_pct(best['quality']['value'])}), and cheaper per request")
    dearest = max(rows, key=_cost)
    if dearest is not winner and _cost(winner)[0] > 0:
        ratio = _cost(dearest)[0] / _cost(winner)[0]
        if ratio >= 1.2:
            reasons.append(f"{ratio:.1f}× cheaper per request than {dearest['name']} ({dearest['prompt_tokens']:.0f} prompt tokens "
                           f"vs {winner['prompt_tokens']:.0f})")
    if kind(winner) == "fine-tuned" and winner.get("training"):
        t = winner["training"]
        cheaper = [r for r in others if _cost(r)[1] > _cost(winner)[1]]
        if cheaper:
            alt = cheaper[0]
            n_here = payback(t, winner["cost_per_1k"], alt["cost_per_1k"], "here_seconds")
            if n_here is not None:
                reasons.append(f"training ({t['here_seconds']:.0f} s here, ~${t['gpu_usd']:.2g} on {report['pricing']['gpu']}) is paid "
                               f"back after ~{n_here:,.0f} requests against {alt['name']} on this machine")
        bad = [f for f in winner.get("red_flags", []) if f.get("verdict") in ("warning", "red")]
        reasons += [f"red flag {f['name']}: {f['verdict']} ({f['summary']})" for f in bad]
    if kind(winner) == "rag":
        rest = [r for r in rows if kind(r) != "rag"]
        if rest:
            top = max(rest, key=lambda r: r["quality"]["value"])
            reasons.append(f"the answers are in the documents: without retrieval the best is {top['name']} "
                           f"({_pct(top['quality']['value'])})")
        for r in rows:
            if kind(r) == "fine-tuned":
                reasons.append(f"{r['name']} ({_pct(r['quality']['value'])} after {r.get('train_examples', '?')} training examples) "
                               "did not learn the facts: fine-tuning teaches format and behaviour, retrieval brings knowledge")
    if q["value"] < 0.05:
        reasons.append("no strategy does the task well here: even the winner is near zero; improve the data or use a larger model")
    skipped = [s for s in ("zero-shot", "few-shot", "rag", "fine-tuned") if s not in {kind(r) for r in rows}]
    if skipped:
        reasons.append(f"not measured: {', '.join(skipped)} (the verdict covers only what ran)")
    ranking = [{"name": r["name"], "value": r["quality"]["value"], "tied_with_best": r in tied} for r in by_quality]
    return {"winner": winner["name"], "kind": kind(winner), "reasons": reasons, "ranking": ranking}
