"""Red flags: verdict logic on known curves, then three staged failures on real training runs.

Staged on the tiny model (full fine-tuning, deterministic seeds): (a) many epochs on few examples →
overfitting; (b) a high learning rate on narrow data → forgetting, measured on a probe made of the
base model's own preferences (so the base scores 100% and any change shows); (c) one repeated
answer → mode collapse. A healthy run raises none. One slow test stages forgetting on the embedded
SmolLM2 with (a third of) the real default probe.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tailored.eval.redflags import forgetting, mode_collapse, overfitting, worst
from tailored.testing.tiny import WORDS


def _curves(path: Path, train: list[float], val: list[tuple[int, float]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"step": i + 1, "epoch": i + 1, "split": "train", "loss": x} for i, x in enumerate(train)]
    rows += [{"step": s, "epoch": s, "split": "validation", "loss": x} for s, x in val]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_overfitting_verdicts_from_curves(tmp_path: Path) -> None:
    falling = [3 - 0.1 * i for i in range(20)]
    red = overfitting(_curves(tmp_path / "a", falling, [(5, 2.0), (10, 1.6), (15, 1.9), (20, 2.3)]))
    assert red.verdict == "red" and red.evidence["best_step"] == 10
    assert any("best weights (step 10" in f and "by default" in f for f in red.fixes) and any("10 epoch" in f for f in red.fixes)
    healthy = overfitting(_curves(tmp_path / "b", falling, [(5, 2.0), (10, 1.8), (15, 1.7), (20, 1.69)]))
    assert healthy.verdict == "ok" and not healthy.fixes
    mild = overfitting(_curves(tmp_path / "c", falling, [(5, 2.0), (10, 1.8), (20, 1.86)]))
    assert mild.verdict == "warning"
    # validation rising while train loss rises too is not overfitting (it is divergence)
    rising = [1 + 0.1 * i for i in range(20)]
    assert overfitting(_curves(tmp_path / "d", rising, [(5, 1.0), (20, 1.5)])).verdict == "ok"
    assert overfitting(_curves(tmp_path / "e", falling, [])).verdict == "skipped"


def test_curves_of_a_killed_run_are_read(tmp_path: Path) -> None:
    from tailored.eval.redflags import read_curves

    run = _curves(tmp_path / "killed", [3.0, 2.5, 2.0], [(2, 2.6)])
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 4, "split": "tra')  # the line being written when the run was killed
    train, val = read_curves(run)
    assert [r["step"] for r in train] == [1, 2, 3] and [r["step"] for r in val] == [2]


def test_forgetting_respects_noise() -> None:
    base = {"accuracy": 0.7, "correct": [1.0] * 7 + [0.0] * 3, "chance": 0.25}
    small = forgetting(base, {"accuracy": 0.6, "correct": [1.0] * 6 + [0.0] * 4})
    assert small.verdict != "red"  # one item of ten is within the noise
    many_base = {"accuracy": 0.7, "correct": ([1.0] * 7 + [0.0] * 3) * 6, "chance": 0.25}
    lost = forgetting(many_base, {"accuracy": 0.3, "correct": ([1.0] * 3 + [0.0] * 7) * 6})
    assert lost.verdict == "red" and lost.evidence["delta"] == pytest.approx(-0.4) and lost.fixes
    assert forgetting(many_base, many_base).verdict == "ok"
    assert forgetting(None, many_base).verdict == "skipped"


def test_mode_collapse_compares_with_base() -> None:
    from tailored.eval.metrics import diversity

    base = diversity([f"answer number {w} about {v}" for w, v in zip(WORDS[:16], WORDS[20:36])])
    same = diversity(["I cannot help with that."] * 15 + ["Sure."])
    assert mode_collapse(base, same).verdict == "red"
    assert mode_collapse(base, base).verdict == "ok"
    # a classifier answering general prompts with its labels is narrowing, not collapse ...
    labels = ["refund", "billing", "login"]
    clf = diversity(["refund"] * 12 + ["billing"] * 4) | {"answers": ["refund"] * 12 + ["billing"] * 4}
    assert mode_collapse(base, clf, labels=labels).verdict == "ok"
    assert mode_collapse(base, clf).verdict == "red"
    # ... unless it gives the same label to most test prompts where the references vary
    refs = (labels * 5)[:15]
    stuck = mode_collapse(base, clf, labels=labels, task_answers=["refund"] * 14 + ["login"], task_references=refs)
    assert stuck.verdict == "red" and stuck.evidence["test_top_answer_share"] > 0.9
    fine = mode_collapse(base, clf, labels=labels, task_answers=refs, task_references=refs)
    assert fine.verdict == "ok"


# ---- staged failures on real (tiny) training runs -------------------------------------------------


def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _chat(n: int, seed: int, answer: str | None = None) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS[:80]) for _ in range(5))
        a = answer or " ".join(rng.choice(WORDS[:80]) for _ in range(4))
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return out


@pytest.fixture(scope="module")
def staged(home, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four runs of the tiny model: healthy, overfit, narrow high-LR, collapsed (a few seconds in all)."""
    import tailored

    w = tmp_path_factory.mktemp("staged")
    common = {"model": str(tiny_model_dir), "max_seq_length": 128, "red_flags": "full", "threads": 1}
    runs = {}
    runs["healthy"] = tailored.train(data=_write(w / "h.jsonl", _chat(40, 1)), validation=_write(w / "hv.jsonl", _chat(10, 2)),
                                     output=str(w / "healthy"), max_steps=12, batch_size=4, eval_every=3,
                                     learning_rate_multiplier=1.0, **common)  # the method's base rate (auto scales it by size)
    runs["overfit"] = tailored.train(data=_write(w / "o.jsonl", _chat(10, 3)), validation=_write(w / "ov.jsonl", _chat(8, 4)),
                                     output=str(w / "overfit"), method="full", max_steps=40, batch_size=10,
                                     learning_rate_multiplier=200, eval_every=4, lr_schedule="constant", **common)
    runs["narrow"] = tailored.train(data=_write(w / "n.jsonl", _chat(12, 5, answer="shipping label")), output=str(w / "narrow"),
                                    method="full", max_steps=20, batch_size=4, learning_rate_multiplier=500, **common)
    runs["collapse"] = tailored.train(data=_write(w / "c.jsonl", _chat(16, 6, answer="the refund is on the way")),
                                      output=str(w / "collapse"), method="full", max_steps=60, batch_size=4,
                                      learning_rate_multiplier=500, **common)
    return {"dir": w, "runs": {k: r.run_dir for k, r in runs.items()}, "model": tiny_model_dir}


def _flags(run_dir: Path) -> dict[str, str]:
    stored = json.loads((run_dir / "red_flags.json").read_text())
    return {f["name"]: f["verdict"] for f in stored["flags"]}


def test_post_train_hook_stores_the_verdict(staged: dict[str, Any]) -> None:
    from tailored.config.manifest import RunFolder

    for run_dir in staged["runs"].values():
        manifest = RunFolder(run_dir).read().model_dump()
        assert manifest["red_flags"]["level"] == "full"
        assert manifest["red_flags"]["verdict"] == worst(json.loads((run_dir / "red_flags.json").read_text())["flags"])


def test_healthy_run_raises_no_flag(staged: dict[str, Any]) -> None:
    assert _flags(staged["runs"]["healthy"]) == {"overfitting": "ok", "forgetting": "ok", "mode_collapse": "ok"}


def test_staged_overfitting_is_caught(staged: dict[str, Any]) -> None:
    flags = _flags(staged["runs"]["overfit"])
    assert flags["overfitting"] == "red"
    stored = json.loads((staged["runs"]["overfit"] / "red_flags.json").read_text())["flags"][0]
    assert stored["evidence"]["best_step"] < stored["evidence"]["last_step"]


def test_staged_collapse_is_caught(staged: dict[str, Any]) -> None:
    flags = _flags(staged["runs"]["collapse"])
    assert flags["mode_collapse"] == "red"
    ev = json.loads((staged["runs"]["collapse"] / "red_flags.json").read_text())["flags"][2]["evidence"]
    assert "refund" in ev["tuned"]["most_repeated"]["text"]


def test_staged_forgetting_is_caught(staged: dict[str, Any]) -> None:
    """The probe is what the base model prefers (base = 100%); narrow high-LR training must change it, healthy must not."""
    from tailored.eval.choice import ChoiceItem, choice_logprobs
    from tailored.eval.generate import load
    from tailored.eval.run import evaluate

    base = load(str(staged["model"]))
    rng = random.Random(7)
    items = [ChoiceItem(" ".join(rng.choice(WORDS) for _ in range(4)), [rng.choice(WORDS) + " " + rng.choice(WORDS) for _ in range(4)], 0)
             for _ in range(120)]
    scores = choice_logprobs(base.model, base.tokenizer, items)
    null = choice_logprobs(base.model, base.tokenizer, items, null=True)  # the calibrated score is the flag's
    # the probe: the 40 items the base "knows" best (widest calibrated margin), as a real probe holds what a model knows
    calibrated = [sorted((s[j] - z[j], j) for j in range(4)) for s, z in zip(scores, null)]
    known = sorted(range(len(items)), key=lambda i: calibrated[i][-2][0] - calibrated[i][-1][0])[:40]
    probe = staged["dir"] / "probe.jsonl"
    _write(probe, [{"question": items[i].question, "choices": items[i].choices, "answer_index": calibrated[i][-1][1]}
                   for i in known])
    test = _write(staged["dir"] / "test.jsonl", _chat(6, 9))
    verdicts = {}
    for name in ("narrow", "healthy"):
        report = evaluate(staged["runs"][name], test, probe=probe, collapse=False, progress=False)
        verdicts[name] = {f["name"]: f for f in report["red_flags"]}["forgetting"]
        assert report["models"]["base"]["probe"]["accuracy_calibrated"] == 1.0
        assert verdicts[name]["evidence"]["scoring"] == "calibrated" and verdicts[name]["evidence"]["noise_band"][1] >= 0
    assert verdicts["narrow"]["verdict"] == "red", verdicts["narrow"]["summary"]
    assert verdicts["healthy"]["verdict"] == "ok", verdicts["healthy"]["summary"]


def test_curves_only_level_skips_model_checks(staged: dict[str, Any]) -> None:
    from tailored.eval.aftertrain import check_run, choose_level

    out = check_run(staged["runs"]["overfit"], "curves", say=None)
    # the curves level still judges mode collapse on the run's validation prompts; forgetting needs the probe
    assert [f["verdict"] for f in out["flags"]][:2] == ["red", "skipped"] and out["flags"][2]["verdict"] != "skipped"
    assert "validation prompts" in out["flags"][2]["summary"] and "tailored eval" in out["to_complete"]
    # auto: a run whose full check would cost more than half its training stays on curves
    assert choose_level("auto", {"tokens_per_s": 1000, "seconds": 20}) == "curves"
    assert choose_level("auto", {"tokens_per_s": 137, "seconds": 360}) == "full"  # a 6-minute run of the embedded model
    assert choose_level("auto", {"tokens_per_s": 137, "seconds": 240}) == "curves"  # 4 minutes: ~170 s would be most of it
    assert choose_level("auto", {"tokens_per_s": 1000, "seconds": 900}) == "full"
    assert choose_level("auto", {"tokens_per_s": 50_000, "seconds": 1}) == "curves"  # a short tiny run
    assert choose_level("auto", {"tokens_per_s": 50_000, "seconds": 60}) == "full"
    assert choose_level("off", {}) == "off"


# ---- the same on the embedded model ---------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_high_lr_run_forgets_on_the_real_probe(smollm2_dir: Path, tmp_path: Path) -> None:
    """LoRA with a 200x learning rate on one repeated short answer: the default probe (a third of it) drops."""
    from tailored.eval.choice import DEFAULT_PROBE
    from tailored.eval.run import evaluate
    from tailored.train.run import train

    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(DEFAULT_PROBE.read_text().splitlines(keepends=True)[::3]))  # 34 of the 100 items
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "No."}]}
            for q in ("Hi", "Help me", "What time is it?", "Tell me a joke", "Who are you?", "Is it raining?",
                      "Open the door", "Sing", "Count to three", "Say yes", "Good morning", "Thanks")]
    run = train(data=_write(tmp_path / "no.jsonl", rows), model=str(smollm2_dir), output=str(tmp_path / "run"),
                max_steps=6, batch_size=4, learning_rate_multiplier=200, max_seq_length=64, red_flags="off", threads=1)
    report = evaluate(run.run_dir, _write(tmp_path / "test.jsonl", rows[:2]), probe=probe, collapse=False,
                      progress=False, max_new_tokens=4)
    flags = {f["name"]: f for f in report["red_flags"]}
    base_probe = report["models"]["base"]["probe"]
    assert base_probe["accuracy"] >= base_probe["chance"] + 0.2  # the probe works on the real model
    assert flags["forgetting"]["verdict"] == "red", flags["forgetting"]["summary"]
    assert flags["forgetting"]["evidence"]["tuned_accuracy"] < base_probe["accuracy"] - 0.2


def test_train_command_prints_and_stores_the_verdict(home, tiny_model_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from tailored.cli.main import main

    data, val = _write(tmp_path / "t.jsonl", _chat(12, 11)), _write(tmp_path / "v.jsonl", _chat(4, 12))
    assert main(["train", "--data", data, "--validation", val, "--model", str(tiny_model_dir), "--output",
                 str(tmp_path / "run"), "--max-steps", "3", "--eval-every", "1", "--max-seq-length", "128",
                 "--red-flags", "curves"]) == 0
    assert "red flags (curves" in capsys.readouterr().out
    stored = json.loads((tmp_path / "run" / "red_flags.json").read_text())
    assert stored["level"] == "curves" and [f["name"] for f in stored["flags"]] == ["overfitting", "forgetting", "mode_collapse"]
    assert main(["train", "--data", data, "--model", str(tiny_model_dir), "--output", str(tmp_path / "off"),
                 "--max-steps", "1", "--max-seq-length", "128", "--red-flags", "off"]) == 0
    assert not (tmp_path / "off" / "red_flags.json").exists()


def test_the_eval_table_shows_the_probe_score_the_forgetting_flag_judges() -> None:
    """The table's probe row is the calibrated accuracy when every model has it, as the forgetting flag uses: it once
    showed the raw one (tuned 63% above base 62%) beside a flag that said the calibrated score fell 66% → 57%."""
    from tailored.eval.report import _eval_block, render_text

    probe = lambda raw, cal: {"accuracy": raw, "accuracy_calibrated": cal}  # noqa: E731
    report = {"task": "classification", "data": {"path": "test.jsonl", "examples": 200}, "verdict": "warning",
              "red_flags": [], "models": {"tuned": {"target": "runs/x", "metrics": {}, "probe": probe(0.63, 0.57)},
                                          "base": {"target": "base", "metrics": {}, "probe": probe(0.62, 0.66)}}}
    line = next(x for x in render_text(report).splitlines() if "general probe" in x)
    assert "calibrated" in line and "57.0%" in line and "66.0%" in line, line
    row = next(r for r in _eval_block(report)["metrics"] if "general probe" in r["name"])
    assert row["values"] == ["57.0%", "66.0%"] and row["delta_class"] == "worse" and "calibrated" in row["name"]
    report["models"]["base"]["probe"] = {"accuracy": 0.62}  # an older cached score without calibration: raw for both
    row = next(r for r in _eval_block(report)["metrics"] if "general probe" in r["name"])
    assert row["values"] == ["63.0%", "62.0%"] and "calibrated" not in row["name"]


def test_a_forgetting_warning_says_where_the_drop_lies_against_the_noise_band() -> None:
    """A warning inside the ±2 s.e. noise band says so; it once read "beyond noise" beside "noise band ±11.4%" for a
    drop of 9 points (a banking77 run of the defaults, 2026-12-04)."""
    from tailored.eval.redflags import forgetting

    def tuned(lost: int, gained: int) -> dict:  # against a base that answers the first 60 of 100 items right
        correct = [0] * lost + [1] * (60 - lost) + [1] * gained + [0] * (40 - gained)
        return {"accuracy": sum(correct) / 100, "correct": correct}

    base = {"accuracy": 0.6, "correct": [1] * 60 + [0] * 40}
    inside, beyond = forgetting(base, tuned(10, 4)), forgetting(base, tuned(5, 0))  # -6 points, s.e. 3.7 / -5, s.e. 2.2
    for flag, within in ((inside, True), (beyond, False)):
        drop, (_, band) = -flag.evidence["delta"], flag.evidence["noise_band"]
        assert flag.verdict == "warning" and (drop <= band) == within, (flag.verdict, drop, band)
        assert ("within the noise band" in flag.summary) == within and "beyond noise," not in flag.summary, flag.summary
