"""bench/seeds.py: configurations compared over training seeds (its groups, its difference, its errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "seeds.py"


def _row(config: str, scores: list[float]) -> dict:
    return {"task": "banking77", "config": config, "quality": sum(scores) / len(scores), "scores": scores}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_seeds_groups_runs_by_configuration_and_resamples_both_seeds_and_examples(tmp_path: Path) -> None:
    rows = [_row("base (zero-shot)", [0.0] * 40),  # not a seed of anything: left out
            _row("defaults", [1.0] * 30 + [0.0] * 10), _row("seed 7", [1.0] * 30 + [0.0] * 10),
            _row("wide", [1.0] * 40), _row("wide seed 7", [1.0] * 20 + [0.0] * 20)]  # 1.0 and 0.5: a seed-noisy lead
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"rows": rows}))
    out = tmp_path / "s.json"
    done = _run(str(results), "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["groups"]) == {"defaults", "wide"}
    assert report["groups"]["defaults"]["seeds"] == {"42": 0.75, "7": 0.75}
    assert report["groups"]["wide"]["seeds"] == {"42": 1.0, "7": 0.5}
    c = report["vs_defaults"]["wide"]
    assert abs(c["delta"]) < 1e-9 and c["matched_leads"] == [-0.25, 0.25] and c["matched_seeds"] == [7, 42]
    # seed noise is in the interval: over the 40 examples alone it would be about ±0.11
    assert c["seeds_resampled"] == "jointly" and c["ci_low"] < -0.2 and c["ci_high"] > 0.2
    assert c["t_interval"][0] < -1 and c["t_interval"][1] > 1  # two seeds: t(1) = 12.7'
    assert "ahead at 1 of 2 matched seeds" in done.stdout


def test_seeds_refuses_unreadable_or_unpaired_results_without_a_traceback(tmp_path: Path) -> None:
    missing = _run(str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "not a bench/quality.py result" in missing.stderr
    assert "Traceback" not in missing.stderr
    unpaired = tmp_path / "u.json"
    unpaired.write_text(json.dumps({"rows": [_row("defaults", [1.0, 0.0]), _row("wide", [1.0, 0.0, 1.0])]}))
    done = _run(str(unpaired))
    assert done.returncode != 0 and "not paired" in done.stderr and "Traceback" not in done.stderr


def test_seeds_compares_the_score_asked_for(tmp_path: Path) -> None:
    rows = [dict(_row("defaults", [1.0, 0.0, 0.0, 0.0]), scores_ranked=[1.0, 1.0, 0.0, 0.0]),
            dict(_row("seed 7", [0.0, 1.0, 0.0, 0.0]), scores_ranked=[1.0, 1.0, 1.0, 0.0])]
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"rows": rows}))
    out = tmp_path / "s.json"
    assert _run(str(results), "--scores", "ranked", "--json", str(out)).returncode == 0
    report = json.loads(out.read_text())
    assert report["scores"] == "ranked" and report["groups"]["defaults"]["seeds"] == {"42": 0.5, "7": 0.75}
    held = _run(str(results), "--scores", "constrained")  # rows without that score: named, not a traceback
    assert held.returncode == 2 and "constrained scores" in held.stderr and "Traceback" not in held.stderr
