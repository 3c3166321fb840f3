"""The red-flag check that runs at the end of every training run.

It reaches ``train`` as the ``tailored.post_train`` entry point declared in pyproject.toml, so train
never imports eval.

``red_flags`` setting: ``curves`` reads the run's loss curves (overfitting) and does the cheap part of
the mode-collapse check (the tuned model's answers to a few validation prompts against their references,
:mod:`tailored.eval.validation_answers`; seconds); ``full`` also scores the general probe and samples
answers to varied prompts on the base and the tuned model (forgetting, and the rest of mode collapse);
``auto`` does ``full`` when that is estimated to cost at most half the training time (a typical CPU run
of minutes gets all three; a test's run of seconds does not) and ``curves`` otherwise; ``off`` skips it.
The overall verdict is ``incomplete`` (never ``ok``) while a check was skipped, with the command that
completes it. The verdict is printed, written to ``red_flags.json`` in the run folder and summarised in
the manifest (``red_flags``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tailored.config.files import write_json
from tailored.config.manifest import Manifest, RunFolder
from tailored.eval.choice import DEFAULT_PROBE
from tailored.eval.redflags import Flag, completion, forgetting, headline, mode_collapse, overfitting, render, worst

# Forward-pass token equivalents of the full check: per model 22.8k probe tokens (the 100-item default probe
# and its content-free pass, SmolLM2's tokenizer; 36 s at 2 threads, as the 3x-training-speed rule predicts)
# and ~10k for the sampled answers' slow batched decoding; two models.
FULL_CHECK_TOKENS = 68_000
LOAD_SECONDS = 2.0  # loading base and tuned model, tokenizing the probe: paid even by a tiny model
FULL_SHARE = 0.5  # red_flags: auto runs the full check when it costs at most this share of the training time


def full_check_seconds(metrics: dict[str, Any]) -> float:
    """Estimated seconds of the full check: a forward pass runs ~3x faster per token than a training step."""
    return LOAD_SECONDS + FULL_CHECK_TOKENS / max(3.0 * float(metrics.get("tokens_per_s") or 0.0), 1e-9)


def choose_level(level: str, metrics: dict[str, Any]) -> str:
    """``curves`` or ``full`` for the ``red_flags`` setting (see module docstring)."""
    if level != "auto":
        return level
    return "full" if full_check_seconds(metrics) <= FULL_SHARE * float(metrics.get("seconds") or 0.0) else "curves"


def train_labels(manifest: Manifest) -> list[str] | None:
    """The label set when the run's training data is a classification task, else None."""
    from tailored.eval.tasks import detect_task, read_test_set

    path = Path(manifest.data.train.path)
    try:
        if path.is_file() and detect_task(path) == "classification":
            return sorted({r.strip() for r in read_test_set(path).references})
    except Exception:  # noqa: BLE001 - unreadable data only means no label set
        return None
    return None


def run_labels(manifest: Manifest) -> list[str] | None:
    """A run's label set: recorded in the manifest after training, else read from its training data."""
    return manifest.labels or train_labels(manifest)


def record_labels(run_dir: str | Path) -> list[str] | None:
    """Record the label set of a classification run in its manifest (eval, chat and serve constrain to it)."""
    run = RunFolder(run_dir)
    labels = train_labels(run.read())
    if labels:
        run.update(labels=labels)
    return labels


def check_run(run_dir: str | Path, level: str = "full", *, progress: bool = False, say: Any = print) -> dict[str, Any]:
    """Red flags for a finished run; writes ``red_flags.json`` and the manifest's ``red_flags`` entry.

    Args:
        run_dir: the run folder.
        level: ``curves`` (overfitting only) or ``full`` (+ forgetting and mode collapse on base vs tuned).
        progress: show progress bars while scoring.
        say: where to print the verdict (``None`` prints nothing).
    """
    from tailored.eval import cache
    from tailored.eval.generate import load
    from tailored.eval.run import probe_scores, sampled_diversity
    from tailored.eval.validation_answers import answers_on_validation
    from tailored.methods.runs import base_folder

    t0 = time.time()
    run = RunFolder(run_dir)
    run_dir = run.path
    manifest = run.read()
    flags = [overfitting(run_dir)]
    est = full_check_seconds(manifest.metrics.model_dump() if manifest.metrics else {})
    complete = f"run `tailored eval {run_dir} --data TEST` (or train with --red-flags full; about {est:.0f} s)"
    tuned = load(run_dir)
    if level == "full":
        scored: dict[str, dict[str, Any]] = {}
        for name, spec in (("base", str(base_folder(manifest))), ("tuned", run_dir)):
            identity = cache.model_identity(spec)
            model = tuned if name == "tuned" else load(spec)
            scored[name] = {"probe": probe_scores(model, identity, DEFAULT_PROBE, progress=progress),
                            "diversity": sampled_diversity(model, identity, progress=progress)}
            del model
        flags.append(forgetting(scored["base"]["probe"], scored["tuned"]["probe"], probe_name=DEFAULT_PROBE.name))
        # against the base on varied prompts: a tiny or weak base gives one answer to most task prompts too, so the
        # validation-answers part (no base to compare with) is the curves level's stand-in for this one
        flags.append(mode_collapse(scored["base"]["diversity"], scored["tuned"]["diversity"], labels=train_labels(manifest)))
    else:
        flags.append(Flag("forgetting", "skipped", f"not checked after training (red_flags: {level})", {}, [complete]))
        on_validation = answers_on_validation(tuned, manifest)
        if on_validation:
            task = {"task_answers": on_validation["tuned"]["answers"],
                    "task_references": on_validation["references"]["answers"]}
            flag = mode_collapse(on_validation["references"], on_validation["tuned"], compared_with="the references", **task)
            flag.summary = f"on {on_validation['tuned']['n']} validation prompts: {flag.summary}"
            flag.evidence["scope"] = "validation prompts only; the varied-prompts part needs the full check"
            flags.append(flag)
        else:
            flags.append(Flag("mode_collapse", "skipped", "not checked after training: the run has no validation data "
                              f"(red_flags: {level})", {}, [complete]))
    del tuned
    out = {"level": level, "verdict": worst(flags), "flags": [f.as_dict() for f in flags], "seconds": round(time.time() - t0, 1)}
    more = completion(flags)
    if more:
        out["to_complete"] = more
    write_json(run.red_flags, out, indent=1)
    run.update(red_flags={"level": level, "verdict": out["verdict"], **{f.name: f.verdict for f in flags},
                          **({"to_complete": more} if more else {})})
    if say is not None:
        say(f"red flags ({level}, {out['seconds']:.0f} s): {headline(flags)}\n{render(flags)}")
    return out


def after_training(result: Any, cfg: Any) -> None:
    """The post-train hook: pick the level from ``cfg.red_flags`` and the run's cost, then check."""
    record_labels(result.run_dir)
    setting = getattr(cfg, "red_flags", "auto")
    if setting == "off":
        result.manifest = RunFolder(result.run_dir).read()
        return
    level = choose_level(setting, result.metrics)
    check_run(result.run_dir, level)
    result.manifest = RunFolder(result.run_dir).read()
