"""Validation always, the best weights by default, verdicts that do not overstate, targets checked before training."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

LABELS = ("refund", "billing", "shipping", "login")


def _labelled(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    words = "please help me with my order account card payment today now again thanks".split()
    return [{"messages": [{"role": "user", "content": f"{' '.join(rng.sample(words, 4))} {i}"},
                          {"role": "assistant", "content": LABELS[i % len(LABELS)]}]} for i in range(n)]


def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---- the learning-rate rule ------------------------------------------------------------------------


def test_the_learning_rate_rule_scales_by_the_square_root_of_the_model_size() -> None:
    from tailored.train.hparams import size_multiplier

    # 135M: the banking77 sweep's flat optimum (x5.4-x10.8); 7B: the methods' base rates as published;
    # 33-65B: the QLoRA paper's 1e-4 (x0.5); tiny test models are clamped at 8
    assert size_multiplier(134_515_008) == 7.21
    assert size_multiplier(7_000_000_000) == 1.0 and size_multiplier(8_030_000_000) == 0.93
    assert size_multiplier(33_000_000_000) == 0.5 and size_multiplier(65_000_000_000) == 0.5
    assert size_multiplier(100_000) == 8.0 and size_multiplier(None) == 1.0


def test_auto_epochs_are_openais_rule_and_more_for_a_small_guarded_set() -> None:
    from tailored.config.auto import auto_epochs
    from tailored.train.hparams import resolve

    # OpenAI's rule without a validation guard: 3, more for tiny sets, fewer for huge ones
    assert [auto_epochs(n) for n in (20, 900, 1_000, 10_000)] == [5, 3, 3, 2]
    # guarded (validation + early stopping keep the best weights): >= 4,500 example-passes, at most 5 epochs;
    # banking77's 900 trained examples get the 5 its sweep measured best
    assert [auto_epochs(n, guarded=True) for n in (20, 54, 900, 1_000, 1_200, 1_500, 10_000)] == [5, 5, 5, 5, 4, 3, 2]
    common = dict(batch_size="auto", learning_rate_multiplier="auto", base_learning_rate=2e-4, max_steps=None,
                  warmup_ratio=0.05, eval_every=None, save_every=None)
    assert resolve(n_examples=900, epochs="auto", guarded=True, **common).total_steps == 5 * 57
    assert resolve(n_examples=900, epochs="auto", **common).total_steps == 3 * 57
    assert resolve(n_examples=900, epochs=2, guarded=True, **common).epochs == 2  # a number is kept


def test_auto_validation_runs_about_five_times_and_never_twice_in_a_row_at_the_end() -> None:
    """A run cut to 116 steps validated at 23, 46, 69, 92, 115 and again at 116: a sixth pass (about 33 s of a
    20-minute banking77 run) one step after the fifth."""
    from tailored.train.hparams import resolve

    common = dict(n_examples=900, epochs="auto", batch_size="auto", learning_rate_multiplier="auto",
                  base_learning_rate=2e-4, warmup_ratio=0.0, eval_every=None, save_every=None)
    for total in range(25, 600):
        hp = resolve(max_steps=total, **common)
        at = [s for s in range(1, total + 1) if hp.validates_at(s)]
        assert len(at) <= 5 and at[-1] == total and at[-1] - at[-2] >= total // 10, (total, at)
    assert [s for s in range(1, 117) if resolve(max_steps=116, **common).validates_at(s)] == [24, 48, 72, 96, 116]
    assert resolve(max_steps=116, **{**common, "eval_every": 23}).validates_at(115)  # a number is kept


def test_data_check_resolves_the_epochs_and_time_of_what_validation_auto_leaves(tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    """A 1,200-example file trains on 1,080 under validation: auto, which get 5 guarded epochs (1,200 would get 4):
    `data check` says what training will do, and times the examples trained on, not the held-out ones."""
    from tailored.data.check import check_file
    from tailored.models.load import load_tokenizer
    from tailored.train.hparams import resolve

    report = check_file(_write(tmp_path / "d.jsonl", _labelled(1_200)), tokenizer=load_tokenizer(tiny_model_dir),
                        tokens_per_second=1_000.0)
    t = report.token_stats
    trained = resolve(n_examples=1_080, epochs="auto", batch_size="auto", learning_rate_multiplier="auto",
                      base_learning_rate=2e-4, max_steps=None, warmup_ratio=0.0, eval_every=None, save_every=None,
                      guarded=True)
    assert t["held_out"] == 120 and t["epochs"] == trained.epochs == 5
    assert t["epoch_tokens"] == round(t["total"] * 1_080 / 1_200)
    assert t["estimated_seconds"] == round(t["epoch_tokens"] * 5 / 1_000.0, 1)
    assert "validation: auto holds out 120 examples" in report.render()


def test_data_check_takes_trainings_validation_setting(tiny_model_dir: Path, tmp_path: Path, capsys: Any) -> None:
    """`data check --validation none|FILE` plans what training then does: nothing held out, and the auto epochs of an
    unguarded (OpenAI's 3) or a guarded run of all 1,200 examples (4); it once assumed validation: auto whatever was
    given."""
    from tailored.cli.main import main

    data = _write(tmp_path / "d.jsonl", _labelled(1_200))
    for validation, epochs in (("none", 3), (str(data), 4), ("auto", 5)):
        assert main(["data", "check", str(data), "--model", str(tiny_model_dir), "--json", "--neighbours", "0",
                     "--validation", validation]) == 0  # without the listing a labelled set's prompts get
        t = json.loads(capsys.readouterr().out)["token_stats"]
        assert (t["held_out"], t["epochs"]) == ((120, 5) if validation == "auto" else (0, epochs)), validation
        assert t["epoch_tokens"] == (t["total"] if validation != "auto" else round(t["total"] * 1_080 / 1_200))
    missing = tmp_path / "missing.jsonl"
    assert main(["data", "check", str(data), "--model", str(tiny_model_dir), "--validation", str(missing)]) != 0
    err = capsys.readouterr().err
    assert f"--validation {missing}: no such file" in err and "Traceback" not in err


def test_data_check_takes_trainings_early_stopping_patience(tiny_model_dir: Path, tmp_path: Path, capsys: Any) -> None:
    """`data check --early-stopping-patience 0` plans the unguarded run training then does (OpenAI's 3 epochs on what
    `validation: auto` leaves, not the guarded 5); it once assumed the auto patience whatever training would be given.
    A bad value is a named error, not a traceback."""
    from tailored.cli.main import main

    data = _write(tmp_path / "d.jsonl", _labelled(1_200))
    for patience, epochs in (("0", 3), ("3", 5), ("auto", 5)):
        assert main(["data", "check", str(data), "--model", str(tiny_model_dir), "--json",
                     "--early-stopping-patience", patience]) == 0
        t = json.loads(capsys.readouterr().out)["token_stats"]
        assert (t["held_out"], t["epochs"]) == (120, epochs), patience
    with pytest.raises(SystemExit) as bad:
        main(["data", "check", str(data), "--model", str(tiny_model_dir), "--early-stopping-patience", "-1"])
    assert bad.value.code != 0
    err = capsys.readouterr().err
    assert "--early-stopping-patience" in err and "Traceback" not in err
    from tailored.errors import ConfigError
    from tailored.train.preflight import check_data

    for bad_value in ("x", -1, True, 2.5):  # the library call names the setting too, as YAML and the API do
        with pytest.raises(ConfigError, match="early_stopping_patience"):
            check_data(data, model=None, early_stopping_patience=bad_value)


def test_data_checks_rough_speed_is_the_measured_speed_of_a_default_run() -> None:
    """`data check`'s rough time uses the speed the quality benchmark measured for a default run of the embedded
    model on 2 threads (the slowest recorded; it once assumed 80 tokens/s, a 5-minute run announced as 22)."""
    from tailored.models.load import local_folder
    from tailored.train.preflight import estimated_tokens_per_second

    results = Path(__file__).resolve().parents[1] / "bench" / "results"
    measured = [r["tokens_per_s"] for f in results.glob("quality-banking77*.json")
                for r in json.loads(f.read_text())["rows"]
                if r["config"] == "defaults" and r["tokens_per_s"]]
    slowest = min(measured)
    assert slowest > 200  # the runs of 2026-12-02 and -03: 211-330 tokens/s
    assert 0.6 * slowest <= estimated_tokens_per_second(local_folder("smollm2"), threads=2) <= slowest


# ---- validation: auto -----------------------------------------------------------------------------

def test_auto_validation_holds_out_a_stratified_share() -> None:
    from tailored.train.validation import auto_holdout_count, hold_out

    assert [auto_holdout_count(n) for n in (40, 60, 100, 400, 5000, 20_000, 100_000)] == [0, 12, 20, 40, 500, 1000, 1000]
    examples = read_records_from(_labelled(200))
    held = hold_out(examples, seed=1)
    assert len(held.validation_index) == 32 and len(held.train_index) == 168  # 10%, raised to 32 (within a fifth)
    assert held.stratified_by == "answer (label)"
    assert Counter(examples[i].assistant_text() for i in held.validation_index) == {label: 8 for label in LABELS}
    assert held.lines == [examples[i].line for i in held.validation_index]
    assert hold_out(examples, seed=1).validation_index == held.validation_index  # the same for a seed
    small = hold_out(read_records_from(_labelled(40)), seed=0)
    assert not small.validation_index and "60 or more" in small.reason


def read_records_from(rows: list[dict[str, Any]]) -> list[Any]:
    import tempfile

    from tailored.data.readers import read_records

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return read_records(f.name).examples


@pytest.fixture(scope="module")
def auto_run(home, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny run trained with no validation file and no setting about it (validation: auto)."""
    import contextlib
    import io

    import tailored

    root = tmp_path_factory.mktemp("auto")
    data = _write(root / "train.jsonl", _labelled(80))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = tailored.train(data=data, model=str(tiny_model_dir), output=str(root / "run"), max_steps=8, batch_size=8,
                                eval_every=2, max_seq_length=64, threads=1, red_flags="curves")
    return {"root": root, "data": data, "run": result.run_dir, "result": result, "out": out.getvalue()}


def test_training_without_a_validation_file_holds_out_and_records_it(auto_run: dict[str, Any], tiny_model_dir: Path) -> None:
    import tailored
    from tailored.config.manifest import RunFolder

    manifest = RunFolder(auto_run["run"]).read()
    val = manifest.data.validation
    assert val is not None and val.held_out == "auto" and val.stratified_by == "answer (label)"
    assert val.examples == 16 and len(val.lines) == 16 and manifest.data.train.examples == 64
    assert val.sha256 == manifest.data.train.sha256  # held out of the training file itself
    assert "validation: auto — 16 of 80 examples" in auto_run["out"] and "--validation none" in auto_run["out"]
    assert manifest.config["validation"] == "auto" and manifest.config["early_stopping_patience"] == 2
    assert manifest.metrics.best_step is not None  # validation ran, the best step is kept
    none = tailored.train(data=auto_run["data"], model=str(tiny_model_dir), output=str(auto_run["root"] / "none"),
                          validation="none", max_steps=1, batch_size=8, max_seq_length=64, threads=1, red_flags="off")
    assert none.manifest.data.validation is None and none.manifest.data.train.examples == 80
    assert none.manifest.config["early_stopping_patience"] == 0


def test_the_jobs_api_takes_validation_none_by_the_same_name() -> None:
    from tailored.errors import RequestError
    from tailored.jobs.requests import parse_create

    body = {"model": "m", "training_file": "file-1"}
    assert parse_create({**body, "tailored": {"validation": "none"}}).tailored == {"validation": "none"}
    with pytest.raises(RequestError, match="tailored.validation"):
        parse_create({**body, "tailored": {"validation": "/etc/passwd"}})


# ---- the best weights by default ------------------------------------------------------------------

def test_the_best_weights_are_what_chat_eval_export_and_serve_use(auto_run: dict[str, Any], tiny_model_dir: Path,
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    from tailored.cli.main import main
    from tailored.config.manifest import RunFolder
    from tailored.eval.run import evaluate
    from tailored.export import export_run
    from tailored.methods.runs import load_run
    from tailored.serve.registry import Registry

    run = RunFolder(auto_run["run"])
    assert run.pick() == "best" and run.pick("final") == "final" and run.weights() == run.best
    model, _, _ = load_run(run.path)
    saved = load_file(str(next(run.best.glob("*.safetensors"))))
    loaded = {n: p for n, p in model.named_parameters() if "lora_A" in n}
    assert loaded and all(any(k.replace(".weight", "") in n for n in loaded) for k in saved if "lora_A" in k)
    name, key = next((n, k) for k in saved if "lora_A" in k for n in loaded if k.replace(".weight", "") in n)
    assert (loaded[name].detach() == saved[key]).all()  # the best step's weights, not the final ones

    report = evaluate(run.path, auto_run["data"], task="classification", baseline=None, probe=None, collapse=False,
                      limit=4, use_cache=False, progress=False, save=False)
    assert report["which"] == "best" and report["weights"].startswith("best (step")
    final = evaluate(run.path, auto_run["data"], task="classification", baseline=None, probe=None, collapse=False,
                     limit=4, use_cache=False, progress=False, save=False, which="final")
    assert final["which"] == "final"

    result = export_run(run.path, tmp_path / "adapter", format="adapter")
    record = json.loads((tmp_path / "adapter" / "tailored_export.json").read_text()) if (tmp_path / "adapter" / "tailored_export.json").is_file() else None
    assert result.weights.startswith("best")
    if record is not None:
        assert record["run"]["weights"] == "best"

    assert main(["chat", str(run.path), "--prompt", "hello", "--max-new-tokens", "2"]) == 0
    assert "weights: best (step" in capsys.readouterr().err

    served = [e for e in Registry(tiny_model_dir, "tiny", "hash", [run.path]).models() if e.run_dir is not None]
    assert served and served[0].which == "best"


# ---- verdicts that do not overstate ---------------------------------------------------------------

def test_the_verdict_is_incomplete_while_a_check_is_skipped(auto_run: dict[str, Any]) -> None:
    from tailored.config.manifest import RunFolder
    from tailored.eval.redflags import Flag, completion, worst

    ok, skipped = Flag("overfitting", "ok", ""), Flag("forgetting", "skipped", "", {}, ["run `tailored eval RUN --data T`"])
    assert worst([ok, ok, ok]) == "ok" and worst([ok, skipped]) == "incomplete" and worst([]) == "incomplete"
    assert worst([Flag("x", "warning", ""), skipped]) == "warning" and worst([Flag("x", "red", ""), skipped]) == "red"
    assert completion([ok, skipped]) == "forgetting not checked; to complete: run `tailored eval RUN --data T`"
    assert completion([ok]) is None

    stored = json.loads(RunFolder(auto_run["run"]).red_flags.read_text())  # the check after training (curves)
    assert stored["verdict"] != "ok" and "tailored eval" in stored["to_complete"]
    assert [f["name"] for f in stored["flags"] if f["verdict"] == "skipped"] == ["forgetting"]  # collapse ran on validation
    assert "red flags (curves" in auto_run["out"] and "to complete: run `tailored eval" in auto_run["out"]
    assert RunFolder(auto_run["run"]).read().red_flags["to_complete"] == stored["to_complete"]


def test_one_answer_for_every_question_is_flagged_after_training(home, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The issue's case: a run on one repeated answer for 60 different questions never gets "ok" again."""
    import tailored

    rows = [{"messages": [{"role": "user", "content": f"question number {i} about topic {i * 7 % 13}"},
                          {"role": "assistant", "content": "the refund is on its way"}]} for i in range(60)]
    refs = _labelled(12, 3)
    val = _write(tmp_path / "v.jsonl", [{"messages": [r["messages"][0], {"role": "assistant", "content": f"answer {i}"}]}
                                        for i, r in enumerate(refs)])
    result = tailored.train(data=_write(tmp_path / "t.jsonl", rows), validation=val, model=str(tiny_model_dir),
                            output=str(tmp_path / "run"), method="full", max_steps=30, batch_size=4,
                            learning_rate_multiplier=500, max_seq_length=128, threads=1, red_flags="curves")
    flags = json.loads((result.run_dir / "red_flags.json").read_text())
    assert flags["verdict"] in ("red", "warning")
    assert {f["name"]: f["verdict"] for f in flags["flags"]}["mode_collapse"] in ("red", "warning")


# ---- data check: targets a model can only collapse on ---------------------------------------------

def _problems(tmp_path: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
    from tailored.data.check import check_file

    report = check_file(_write(tmp_path / "d.jsonl", rows))
    return {p.category: p.message for p in report.problems if p.category in ("dominant_answer", "template_answers",
                                                                            "answer_repeats_prompt")}


def test_data_check_warns_when_targets_are_dominated_templated_or_echoed(tmp_path: Path) -> None:
    qs = [f"what happened to my order number {i} from {['monday', 'friday', 'june'][i % 3]}" for i in range(60)]
    one = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "the refund is on its way"}]}
           for q in qs]
    assert "100% of the targets" in _problems(tmp_path, one)["dominant_answer"]
    few = [{"messages": [{"role": "user", "content": q},
                         {"role": "assistant", "content": ["yes", "no", "maybe"][i % 3] if i < 45 else f"label {i}"}]}
           for i, q in enumerate(qs)]
    assert "3 answers are 75%" in _problems(tmp_path, few)["dominant_answer"]
    template = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content":
                 f"Thank you for contacting us about order {i}. Our team will get back to you within 24 hours."}]}
                for i, q in enumerate(qs)]
    assert "template" in _problems(tmp_path, template)["template_answers"]
    echo = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": q + "?"}]} for q in qs]
    assert "repeat their prompt" in _problems(tmp_path, echo)["answer_repeats_prompt"]
    assert _problems(tmp_path, _labelled(80)) == {}  # four balanced labels


def test_data_check_does_not_warn_on_banking77(shared_data: Path) -> None:
    from tailored.data.check import check_file

    for split in ("train", "validation"):
        report = check_file(shared_data / "banking77" / f"{split}.jsonl")
        assert not [p for p in report.problems if p.severity == "warning"], report.render()


# ---- the forgetting probe measures knowledge, not a taste for short answers -----------------------

def test_the_calibrated_probe_score_removes_the_models_prior_over_answer_forms() -> None:
    from tailored.eval.choice import ChoiceItem, score_choices
    from tailored.eval.redflags import forgetting

    items = [ChoiceItem("q", ["no", "a long and correct answer"], 1)] * 4
    # a tuned model that now likes short answers whatever the question: raw scoring says it "learned" or "forgot"
    # depending on the answers' lengths; after the content-free question it likes "no" just as much, so it cancels
    likes_short = score_choices(items, [[-2.0, -5.0]] * 4, [[-1.0, -6.0]] * 4)
    assert likes_short["accuracy"] == 0.0 and likes_short["accuracy_calibrated"] == 1.0
    base = score_choices(items, [[-4.0, -3.0]] * 4, [[-4.0, -4.0]] * 4)
    flag = forgetting(base, likes_short)
    assert flag.verdict == "ok" and flag.evidence["scoring"] == "calibrated" and flag.evidence["raw_accuracy"] == [1.0, 0.0]
    assert "noise band" in flag.summary
    raw_only = forgetting({k: v for k, v in base.items() if "calibrated" not in k},
                          {k: v for k, v in likes_short.items() if "calibrated" not in k})
    assert raw_only.verdict == "red" and raw_only.evidence["scoring"] == "raw"  # what the uncalibrated probe said
