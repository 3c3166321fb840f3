"""Drift: the statistics' p-values behave, and verdicts are right on real traffic (BANKING77 vs itself, held-back
intents, dolly open questions), through the library and ``tailored drift RUN``.

Embeddings are the real all-MiniLM-L6-v2, computed once per module. Tests on the shared datasets skip
when ``../shared/data`` is absent.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import tailored
from tailored.cli.main import main
from tailored.drift import stats
from tailored.drift.compare import Sample, compare
from tailored.drift.run import Embeddings, check, history, read_traffic, render


def _rows(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


# --- the statistics alone (synthetic, fast) -----------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_p_values_are_uniform_under_the_null_and_small_under_a_shift() -> None:
    rng = np.random.default_rng(0)
    clf_p, mmd_p = [], []
    for seed in range(20):
        a, b = _unit(rng.normal(size=(120, 16))), _unit(rng.normal(size=(80, 16)))
        clf_p.append(stats.domain_classifier(a, b, permutations=100, seed=seed)[0].p_value)
        mmd_p.append(stats.mmd(a, b, permutations=100, seed=seed).p_value)
    for p in (clf_p, mmd_p):  # about uniform: few small p-values, median near 0.5
        assert sum(v < 0.05 for v in p) <= 3 and 0.25 < float(np.median(p)) < 0.75, p
    shift = np.zeros(16)
    shift[0] = 1.0
    a, b = _unit(rng.normal(size=(120, 16))), _unit(rng.normal(size=(80, 16)) + shift)
    clf, _ = stats.domain_classifier(a, b, permutations=100)
    assert clf.value > 0.7 and clf.p_value < 0.02
    assert stats.mmd(a, b, permutations=100).p_value < 0.02


def test_auc_and_binomial_tail_against_direct_computation() -> None:
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=50), rng.integers(0, 2, 50).astype(bool)
    direct = np.mean([(p > n) + 0.5 * (p == n) for p in s[y] for n in s[~y]])
    assert abs(stats.auc(s, y) - direct) < 1e-12
    assert abs(stats.binomial_tail(3, 10, 0.05) - (1 - sum(__import__("math").comb(10, k) * 0.05**k * 0.95 ** (10 - k)
                                                              for k in range(3)))) < 1e-12


# --- real traffic ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embed() -> Embeddings:
    return Embeddings()


@pytest.fixture(scope="module")
def banking(shared_data: Path, embed: Embeddings) -> dict:
    """BANKING77 train + validation and 150 dolly open questions, with their embeddings."""
    train = _rows(shared_data / "banking77" / "train.jsonl")
    val = _rows(shared_data / "banking77" / "validation.jsonl")
    dolly = _rows(shared_data / "dolly-open-qa" / "validation.jsonl")[:150]
    rows = train + val + dolly
    vectors = embed([r[1]["content"] for r in rows])
    return {"rows": rows, "vectors": vectors, "n_train": len(train), "n_val": len(val)}


def _sample(banking: dict, idx: list[int]) -> Sample:
    rows = [banking["rows"][i] for i in idx]
    return Sample([r[1]["content"] for r in rows], banking["vectors"][idx], answers=[r[2]["content"] for r in rows],
                  ids=[str(i) for i in idx])


@pytest.mark.slow
def test_same_distribution_traffic_is_no_drift_across_seeds(banking: dict) -> None:
    n = banking["n_train"] + banking["n_val"]
    labels = sorted({r[2]["content"] for r in banking["rows"][:n]})
    for seed in range(4):
        order = np.random.default_rng(100 + seed).permutation(n).tolist()
        report = compare(_sample(banking, order[:900]), _sample(banking, order[900:]), labels=labels, seed=seed)
        print(f"seed {seed}\n{render(report)}")
        assert report.verdict == "no drift", render(report)
        p = {c.name: c.test["p_value"] for c in report.checks if c.test}
        assert p["domain classifier"] > 0.01 and p["MMD"] > 0.01


@pytest.mark.slow
def test_held_back_intents_are_drift_and_named(banking: dict) -> None:
    n_train, n = banking["n_train"], banking["n_train"] + banking["n_val"]
    labels = sorted({r[2]["content"] for r in banking["rows"][:n]})
    held = set(random.Random(0).sample(labels, 15))
    label = [r[2]["content"] for r in banking["rows"]]
    train = [i for i in range(n_train) if label[i] not in held]
    held_val = [i for i in range(n_train, n) if label[i] in held]
    traffic = held_val + [i for i in range(n_train, n) if label[i] not in held][:len(held_val)]  # half new intents
    report = compare(_sample(banking, train), _sample(banking, traffic), labels=sorted(set(labels) - held))
    print(render(report))
    status = {c.name: c.status for c in report.checks}
    assert report.verdict in ("drift", "severe") and status["far from training"] != "ok"
    top = [label[int(e["id"])] in held for e in report.most_drifted[:10]]
    assert sum(top) >= 7, report.most_drifted[:10]  # the inputs named first are the new intents


@pytest.mark.slow
def test_cli_drift_verdicts_history_and_exports(embed: Embeddings, shared_data: Path, tiny_model_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """A run trained on BANKING77 (a tiny model: only its folder matters): validation traffic vs dolly questions."""
    run, data = tmp_path / "run", tmp_path / "train.jsonl"
    data.write_text("".join((shared_data / "banking77" / "train.jsonl").read_text().splitlines(True)[:500]))
    tailored.train(data=str(data), model=str(tiny_model_dir), method="lora", max_steps=1, batch_size=2,
                   max_seq_length=1024, threads=1, red_flags="off", output=str(run))
    same = render(check(run, read_traffic(shared_data / "banking77" / "validation.jsonl"), embed=embed))
    assert same.startswith("drift: NO DRIFT") and "domain classifier: ROC AUC" in same and "answer labels" in same
    capsys.readouterr()
    foreign = tmp_path / "traffic.jsonl"  # 60 dolly questions (a third rated) among 40 banking queries (all rated)
    dolly = _rows(shared_data / "dolly-open-qa" / "validation.jsonl")[:60]
    rows = [{"id": f"q{i}", "messages": r[:2], "answer": r[2]["content"], "feedback": "good" if i % 3 == 0 else None}
            for i, r in enumerate(dolly)]
    rows += [{"id": f"b{i}", "messages": r[:2], "answer": r[2]["content"], "feedback": "good"}
             for i, r in enumerate(_rows(shared_data / "banking77" / "validation.jsonl")[:40])]
    foreign.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["drift", str(run), "--traffic", str(foreign), "--to-label", str(tmp_path / "label.jsonl"),
                 "--export", str(tmp_path / "drifted.jsonl"), "--drifted-only"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("drift: SEVERE") and f"tailored train --from {run}" in out and "feedback: 60 answers rated" in out
    assert [h["verdict"] for h in history(run)] == ["no drift", "severe"]
    to_label = [json.loads(line) for line in (tmp_path / "label.jsonl").read_text().splitlines()]
    assert len(to_label) >= 10 and to_label[0]["messages"][-1]["role"] == "assistant"
    assert all(r["id"].startswith("q") for r in to_label[:20])  # the dolly questions are the farthest
    drifted = [json.loads(line)["messages"][1]["content"] for line in (tmp_path / "drifted.jsonl").read_text().splitlines()]
    questions = {r[1]["content"] for r in dolly[::3]}
    assert questions <= set(drifted) and len(drifted) <= len(questions) + 6  # the rated dolly ones, few banking ones
    assert main(["drift", str(run), "--traffic", str(foreign), "--export", str(tmp_path / "new.jsonl")]) == 0
    exported = [json.loads(line) for line in (tmp_path / "new.jsonl").read_text().splitlines()]
    assert len(exported) == 60 and exported[0]["messages"][-1] == {"role": "assistant", "content": rows[0]["answer"]}
    assert main(["drift", str(run), "--traffic", str(tmp_path / "new.jsonl"), "--since", "yesterday"]) == 2  # a clear error


def test_a_wrong_run_folder_is_named_before_the_traffic_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TAILORED_HOME", str(tmp_path / "home"))  # no traffic logged there either
    assert main(["drift", str(tmp_path / "missing-run")]) == 1  # a CheckpointError, as everywhere a RUN is wrong
    err = capsys.readouterr().err
    assert "missing-run is not a run folder" in err and "no traffic" not in err
