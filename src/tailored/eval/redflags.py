"""Red flags: overfitting, catastrophic forgetting and mode collapse, each with a verdict, evidence and a fix.

- overfitting: read from the run's own curves (``metrics.jsonl``), no model needed.
- forgetting: the same general-knowledge multiple-choice probe scored on the base and the tuned
  model (log-likelihood of each choice); a paired difference with its standard error, so a drop
  within the probe's noise is not called a problem.
- mode collapse: sampled answers to varied general prompts; distinct-n, identical outputs and
  mean pairwise similarity, compared with the base model's.

Verdicts: ``ok``, ``warning``, ``red`` (and ``skipped`` when the evidence is missing). The overall
verdict (:func:`worst`) is never ``ok`` while a check was skipped: it is ``incomplete`` then, and
:func:`completion` names the command that runs what is missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tailored.data.jsonl import read_json_rows

VERDICTS = ("ok", "warning", "red", "skipped")

# Varied prompts for the mode-collapse check: any healthy chat model answers them differently.
VARIED_PROMPTS = (
    "Name a fruit that is red.", "Write one sentence about the ocean.", "What is 3 plus 4?",
    "Give me a name for a pet cat.", "Describe the weather in winter.", "What is the capital of Spain?",
    "Suggest a hobby for a rainy day.", "Say hello in French.", "List two colours of the rainbow.",
    "Why do birds fly south?", "Write a short title for a cooking blog.", "What do you call a baby dog?",
    "Tell me a fun fact about the Moon.", "How do I boil an egg?", "Which is bigger, a mouse or a horse?",
    "Translate 'thank you' into Spanish.",
)


@dataclass
class Flag:
    name: str
    verdict: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fixes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_curves(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, validation records) from a run's ``metrics.jsonl``, in step order."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = [r for r in read_json_rows(path) if isinstance(r, dict)]
    train = sorted((r for r in rows if r.get("split") == "train" and r.get("loss") is not None), key=lambda r: r["step"])
    val = sorted((r for r in rows if r.get("split") == "validation" and r.get("loss") is not None), key=lambda r: r["step"])
    return train, val


def _mean_train_loss(train: list[dict[str, Any]], upto: int, window: int) -> float | None:
    """Mean train loss over the ``window`` logged steps ending at ``upto`` (smooths batch noise)."""
    pts = [r["loss"] for r in train if r["step"] <= upto][-window:]
    return sum(pts) / len(pts) if pts else None


def overfitting(run_dir: str | Path, *, rise_warning: float = 0.03, rise_red: float = 0.10) -> Flag:
    """Overfitting from the curves: validation loss rising from its minimum while train loss falls, or a big gap.

    Args:
        run_dir: a run folder with ``metrics.jsonl``.
        rise_warning: relative rise of validation loss above its minimum that is a warning.
        rise_red: relative rise that is red (when train loss kept falling meanwhile).
    """
    train, val = read_curves(run_dir)
    if len(val) < 2:
        return Flag("overfitting", "skipped", "no validation curve to judge (needs 2+ validation points)",
                    {"validation_points": len(val)},
                    ["train with --validation FILE (a held-out 10-20% of your data) so overfitting can be seen"])
    best = min(val, key=lambda r: r["loss"])
    last = val[-1]
    rise = (last["loss"] - best["loss"]) / max(best["loss"], 1e-9)
    window = max(1, len(train) // 10)
    train_at_best = _mean_train_loss(train, best["step"], window)
    train_last = _mean_train_loss(train, train[-1]["step"], window) if train else None
    train_fell = train_at_best is not None and train_last is not None and train_last < train_at_best
    gap = last["loss"] - train_last if train_last is not None else None
    ev: dict[str, Any] = {
        "best_step": best["step"], "best_epoch": best.get("epoch"), "best_validation_loss": best["loss"],
        "last_step": last["step"], "last_epoch": last.get("epoch"), "last_validation_loss": last["loss"],
        "validation_rise": round(rise, 4), "train_loss_at_best": train_at_best, "train_loss_last": train_last,
        "gap": gap, "validation_points": len(val),
    }
    desc = (f"validation loss {best['loss']:.3f} at step {best['step']} (epoch {best.get('epoch')}) → "
            f"{last['loss']:.3f} at step {last['step']} ({rise:+.0%})")
    if train_at_best is not None and train_last is not None:
        desc += f"; train loss {train_at_best:.3f} → {train_last:.3f}"
    big_gap = gap is not None and train_last is not None and gap > 0.5 and last["loss"] > 2.5 * max(train_last, 1e-3)
    if rise >= rise_red and train_fell:
        verdict = "red"
    elif (rise >= rise_warning and train_fell) or big_gap:
        verdict = "warning"
    else:
        verdict = "ok"
    fixes: list[str] = []
    if verdict != "ok":
        epochs_best = best.get("epoch")
        fixes = [
            f"use the best weights (step {best['step']}, kept in {Path(run_dir) / 'best'}): eval, chat, export and serve "
            "use them by default (--which auto) when the run kept them",
            (f"train for about {max(1, round(float(epochs_best) + 0.49))} epoch(s) (--epochs) instead of {last.get('epoch')}"
             if epochs_best else "train for fewer epochs (--epochs)"),
            "lower the learning rate (--learning-rate-multiplier 0.5) or stop early (--early-stopping-patience 2)",
            "add more (varied) training examples",
        ]
    summary = {"red": "validation loss rose from its minimum while train loss kept falling: the model memorises the training set",
               "warning": "signs of overfitting: " + ("a large train/validation gap" if big_gap and rise < rise_warning else "validation loss is rising"),
               "ok": "validation loss did not rise meaningfully from its minimum"}[verdict]
    return Flag("overfitting", verdict, f"{summary} ({desc})", ev, fixes)


def forgetting(base: dict[str, Any] | None, tuned: dict[str, Any] | None, *, threshold: float = 0.05,
               probe_name: str = "general probe") -> Flag:
    """Catastrophic forgetting: accuracy drop on the same probe (``score_choices`` outputs, paired per item).

    Red when the drop exceeds both ``threshold`` and 2 standard errors of the paired difference; a
    warning when it exceeds half the threshold and 1 standard error.
    """
    from tailored.eval.metrics import paired_difference

    if not base or not tuned:
        return Flag("forgetting", "skipped", "needs the probe scored on both the base and the tuned model", {},
                    ["run `tailored eval RUN --data TEST` (it scores the probe on the run and its base model)"])
    # the calibrated score when both have it: a fine-tune's new taste for short or label-like answers is not knowledge
    key = "calibrated" if "correct_calibrated" in base and "correct_calibrated" in tuned else None
    acc, cor = ("accuracy_calibrated", "correct_calibrated") if key else ("accuracy", "correct")
    diff = paired_difference(base[cor], tuned[cor])
    drop, se = -diff["delta"], diff["se"]
    ev = {"probe": probe_name, "scoring": key or "raw", "items": diff["n"], "base_accuracy": base[acc],
          "tuned_accuracy": tuned[acc], "raw_accuracy": [base["accuracy"], tuned["accuracy"]],
          "chance": base.get("chance"), "delta": diff["delta"], "standard_error": se,
          "noise_band": [-2 * se, 2 * se], "ci95": [diff["ci_low"], diff["ci_high"]], "threshold": threshold}
    desc = (f"{probe_name} {'calibrated ' if key else ''}accuracy {base[acc]:.1%} → {tuned[acc]:.1%} "
            f"({diff['delta']:+.1%} ± {se:.1%} s.e., noise band ±{2 * se:.1%}, 95% CI "
            f"{diff['ci_low']:+.1%}..{diff['ci_high']:+.1%}, {diff['n']} items)")
    if drop > threshold and drop > 2 * se:
        verdict, summary = "red", "the tuned model lost general knowledge"
    elif drop > threshold / 2 and drop > se:
        where = (f"beyond the noise band, but not by the red threshold's {threshold:.0%}" if drop > 2 * se
                 else "more than one standard error, within the noise band")
        verdict, summary = "warning", f"general knowledge may have dropped ({where})"
    else:
        verdict, summary = "ok", "no drop in general knowledge beyond the probe's noise"
    fixes = [] if verdict == "ok" else [
        "lower the learning rate (--learning-rate-multiplier 0.5 or less)",
        "use a smaller update: a lower LoRA rank (--lora-r 8) or LoRA instead of full fine-tuning",
        "train for fewer epochs (--epochs), or keep the best checkpoint (--which best)",
        "mix 10-20% general instruction data into the training set",
    ]
    return Flag("forgetting", verdict, f"{summary} ({desc})", ev, fixes)


def mode_collapse(base: dict[str, Any] | None, tuned: dict[str, Any] | None, *, labels: list[str] | None = None,
                  task_answers: list[str] | None = None, task_references: list[str] | None = None,
                  compared_with: str = "base") -> Flag:
    """Mode collapse from :func:`tailored.eval.metrics.diversity` of sampled answers to varied prompts.

    Args:
        base, tuned: ``diversity()`` of the base and tuned model's sampled answers to the varied prompts.
        labels: the label set when the run is a classifier (2+ labels): answering general prompts with
            its labels is then expected narrowing, not collapse, and only the task-level check counts.
        task_answers, task_references: answers and references on the test set: the same answer to most
            test prompts, where the references vary, is collapse whatever the task.
        compared_with: what ``base`` is, for the summary (``base``; ``the references`` when it is the diversity of
            the reference answers to the same prompts, as in the check after training).
    """
    from tailored.eval.metrics import OTHER, match_label, normalize

    if not tuned:
        return Flag("mode_collapse", "skipped", "no sampled answers to judge", {},
                    ["run `tailored eval RUN --data TEST`"])
    b = base or {}
    keys = ("distinct_1", "distinct_2", "identical_share", "mean_similarity", "most_repeated", "n")
    ev: dict[str, Any] = {"tuned": {k: tuned[k] for k in keys}, "base": {k: b[k] for k in keys} if b else None}
    t_id, t_sim, t_d2 = tuned["identical_share"], tuned["mean_similarity"], tuned["distinct_2"]
    b_id, b_sim, b_d2 = b.get("identical_share", 0.0), b.get("mean_similarity", 0.0), b.get("distinct_2", 1.0)
    top = tuned["most_repeated"]
    desc = (f"{top['count']}/{tuned['n']} answers identical (\"{top['text'][:60]}\"), distinct-2 {t_d2:.2f}"
            + (f" vs {compared_with} {b_d2:.2f}" if b else "") + f", mean similarity {t_sim:.2f}"
            + (f" vs {compared_with} {b_sim:.2f}" if b else ""))
    if (t_id >= 0.5 and b_id < 0.5) or (t_sim >= 0.8 and b_sim < 0.5):
        verdict, summary = "red", "mode collapse: the model gives (nearly) the same answer to unrelated prompts"
    elif (t_id >= 0.25 and t_id > b_id + 0.15) or t_d2 < 0.5 * b_d2 or t_sim > b_sim + 0.25:
        verdict, summary = "warning", "answers are much less varied than the base model's"
    else:
        verdict, summary = "ok", "answers to varied prompts stay varied"
    answers = tuned.get("answers") or []
    if verdict != "ok" and labels and len(set(labels)) >= 2 and answers:
        as_labels = sum(match_label(a, labels) != OTHER for a in answers) / len(answers)
        ev["general_answers_that_are_labels"] = as_labels
        if as_labels >= 0.6:
            verdict, summary = "ok", "a classifier answering general prompts with its labels (expected narrowing, not collapse)"
    if task_answers and task_references and len(task_answers) >= 10 and len(set(task_references)) >= 3:
        a_top = max(Counter(normalize(a) for a in task_answers).values()) / len(task_answers)
        r_top = max(Counter(normalize(r) for r in task_references).values()) / len(task_references)
        ev["test_top_answer_share"], ev["test_top_reference_share"] = a_top, r_top
        if a_top >= 0.5 and a_top >= 2 * r_top:
            verdict = "red"
            summary = (f"mode collapse: {a_top:.0%} of test answers are the same, while the most common reference "
                       f"is only {r_top:.0%}")
    fixes = [] if verdict == "ok" else [
        "make the training answers more diverse (many distinct targets, not one template repeated)",
        "train for fewer epochs or with a lower learning rate (--learning-rate-multiplier 0.5)",
        "deduplicate the data (`tailored data check` lists repeated answers)",
    ]
    return Flag("mode_collapse", verdict, f"{summary} ({desc})", ev, fixes)


def worst(flags: list[Flag] | list[dict[str, Any]]) -> str:
    """The overall verdict: ``red`` > ``warning`` > ``incomplete`` (a check was skipped) > ``ok`` (all three ran)."""
    verdicts = [f.verdict if isinstance(f, Flag) else f["verdict"] for f in flags]
    if "red" in verdicts or "warning" in verdicts:
        return "red" if "red" in verdicts else "warning"
    return "incomplete" if "skipped" in verdicts or not verdicts else "ok"


def completion(flags: list[Flag] | list[dict[str, Any]]) -> str | None:
    """What completes the check: the first fix of each skipped flag (commands to run), or None when none was skipped."""
    fixes = []
    for f in flags:
        d = f.as_dict() if isinstance(f, Flag) else f
        if d["verdict"] == "skipped" and d.get("fixes") and d["fixes"][0] not in fixes:
            fixes.append(d["fixes"][0])
    skipped = [(f.as_dict() if isinstance(f, Flag) else f)["name"] for f in flags
               if (f.as_dict() if isinstance(f, Flag) else f)["verdict"] == "skipped"]
    if not skipped:
        return None
    return f"{', '.join(skipped)} not checked; to complete: " + ("; ".join(fixes) or "run `tailored eval RUN --data TEST`")


def headline(flags: list[Flag] | list[dict[str, Any]]) -> str:
    """The overall verdict in one line, with what completes it when it is incomplete."""
    verdict = worst(flags)
    more = completion(flags)
    return f"{verdict} ({more})" if more else verdict


def render(flags: list[Flag] | list[dict[str, Any]]) -> str:
    """Plain-text verdicts with evidence and fixes, for the terminal."""
    marks = {"ok": "ok     ", "warning": "WARNING", "red": "RED    ", "skipped": "skipped"}
    lines = []
    for f in flags:
        d = f.as_dict() if isinstance(f, Flag) else f
        lines.append(f"  [{marks[d['verdict']]}] {d['name']}: {d['summary']}")
        for fix in d.get("fixes", []):
            lines.append(f"            fix: {fix}")
    return "\n".join(lines)
