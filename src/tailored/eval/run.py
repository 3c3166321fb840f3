"""``evaluate()``: held-out metrics for a run (and its base model), side-by-side answers and red flags.

Each model is loaded once; its answers, probe scores and sampled answers are cached per (weights,
data, settings), so the base model's half of a comparison is computed once for every run on it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from tailored.config.files import file_sha256, write_json
from tailored.config.manifest import RunFolder, is_run_dir
from tailored.engine.constraints import Structure
from tailored.errors import DataError
from tailored.eval import cache
from tailored.eval.choice import DEFAULT_PROBE, choice_logprobs, read_choice_file, score_choices
from tailored.eval.generate import ChatModel, GenerationSettings, load
from tailored.eval.generation import generate_answers, ranked_answers, reference_loss
from tailored.eval.metrics import diversity
from tailored.eval.redflags import VARIED_PROMPTS, Flag, completion, forgetting, mode_collapse, overfitting, worst
from tailored.eval.tasks import TASKS, detect_task, read_labels, read_test_set, score
from tailored.methods.runs import base_folder
from tailored.train.progress import Progress

COLLAPSE_SETTINGS = {"max_new_tokens": 24, "temperature": 0.8, "top_p": 0.95, "seed": 1234}


def probe_scores(model: ChatModel, identity: str, probe: str | Path, *, use_cache: bool = True, progress: bool = True) -> dict[str, Any]:
    """Multiple-choice probe accuracy of one model (cached)."""
    items = read_choice_file(probe)

    def compute() -> dict[str, Any]:
        bar = Progress(f"probe {model.name}", len(items), unit="item", enabled=progress, transient=True)
        try:
            lps = choice_logprobs(model.model, model.tokenizer, items, on_progress=bar.advance)
            null = choice_logprobs(model.model, model.tokenizer, items, null=True)
        finally:
            bar.close()
        return score_choices(items, lps, null)

    value, _ = cache.cached(cache.key("probe", identity, file_sha256(probe), "calibrated"), compute, enabled=use_cache)
    return value


def sampled_diversity(model: ChatModel, identity: str, *, use_cache: bool = True, progress: bool = True) -> dict[str, Any]:
    """Diversity of sampled answers to :data:`VARIED_PROMPTS` (the answers are cached, the scores recomputed)."""
    convs = [[{"role": "user", "content": p}] for p in VARIED_PROMPTS]
    answers, _ = cache.cached(
        cache.key("samples", identity, COLLAPSE_SETTINGS, VARIED_PROMPTS),
        lambda: generate_answers(model, convs, GenerationSettings(**COLLAPSE_SETTINGS), batch_size=len(convs),
                                 label=f"samples {model.name}", progress=progress), enabled=use_cache)
    return {**diversity(answers), "answers": answers}


def _max_new_tokens(model: ChatModel, references: list[str]) -> int:
    longest = max((len(model.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=32)
    return min(512, int(longest * 1.5) + 16)


def evaluate(
    target: str | Path,
    data: str | Path,
    *,
    task: str = "auto",
    baseline: str | Path | None = "auto",
    probe: str | Path | None = "default",
    collapse: bool = True,
    labels: str | Path | list[str] | None = None,
    which: str = "auto",
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    side_by_side: int = 10,
    use_cache: bool = True,
    progress: bool = True,
    save: bool = True,
    constrain: str = "auto",
    json_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a run folder or a model on held-out data; compare with a baseline; raise red flags.

    Args:
        target: a run folder, a model folder, a .gguf or ``smollm2``.
        data: test file (chat-like JSONL, or ``{question, choices, answer_index}`` lines for ``choice``).
        task: ``auto`` (guessed from the data), ``classification``, ``generation``, ``sql`` or ``choice``.
        baseline: model or run to compare with; ``auto`` = the run's parent (``from_run``) or else its base model (none for a base model); None = no baseline.
        probe: general-knowledge probe for the forgetting check: ``default`` (built in), a file, or None to skip.
        collapse: sample answers to varied prompts for the mode-collapse check.
        labels: the label set for classification (list or file); default: the labels in the data.
        which: weights of a run: ``auto`` (the best validation step's when the run kept them, else the final
            ones), ``final``, ``best`` or a checkpoint name; the report names the one used (``which``, ``weights``).
        max_new_tokens: answer length limit (default: 1.5x the longest reference + 16).
        batch_size: prompts per generation batch.
        limit: evaluate only the first N examples.
        side_by_side: how many examples to show with base and tuned answers.
        use_cache: read/write ``$TAILORED_HOME/eval-cache``.
        progress: show progress bars.
        save: for a run folder, keep the report in ``RUN/evals/`` (``tailored report`` shows it).
        constrain: ``labels``: classification answers are also generated with decoding held to the label
            set (exact labels only) and scored as ``accuracy_constrained`` beside the free ``accuracy``,
            and the label set is ranked by the model's probability of each whole label
            (``accuracy_ranked``, :mod:`tailored.eval.ranking`);
            ``auto`` does so when the label set is known (``labels``, or the run's training labels);
            ``none`` never.
        json_schema: every answer is generated held to this JSON schema (structured output); the
            report's ``valid_json_rate`` then counts answers that parse (a token limit can cut one).

    Returns:
        A JSON-serialisable report: task, data, per-model metrics, side-by-side rows, red flags.
    """
    if task not in TASKS:
        raise DataError(f"--task {task!r} is not known", hint=f"use one of: {', '.join(TASKS)}")
    t0 = time.time()
    data = Path(data)
    is_run = is_run_dir(target)
    if baseline == "auto":  # a run continued from another (from_run) is compared with its parent, else its base
        manifest = RunFolder(target).read() if is_run else None
        parent = manifest.lineage.parent if manifest is not None and manifest.lineage else None
        baseline = (parent if parent and is_run_dir(parent) else str(base_folder(manifest))) if manifest else None
    probe_path = DEFAULT_PROBE if probe == "default" else (Path(probe) if probe else None)
    test = None
    if task == "auto":
        task = detect_task(data)
    if task != "choice":
        test = read_test_set(data, limit)
    label_list = read_labels(labels) if isinstance(labels, (str, Path)) else labels
    choice = constraint_labels(constrain, task, label_list, target if is_run else None, test)
    weights = RunFolder(target).describe_weights(which) if is_run else None
    which = RunFolder(target).pick(which) if is_run else which
    report: dict[str, Any] = {"target": str(target), "which": which, "weights": weights, "baseline": None if baseline is None else str(baseline),
                              "task": task, "data": {"path": str(data.resolve()), "sha256": file_sha256(data),
                                                     "examples": len(test.references) if test else None},
                              "models": {}}

    def one(name: str, spec: str | Path, w: str) -> dict[str, Any]:
        identity = cache.model_identity(spec, w if is_run_dir(spec) else "final")
        model = load(spec, which=w if is_run_dir(spec) else "final")
        out: dict[str, Any] = {"target": str(spec)}
        if task == "choice":
            out["metrics"] = {k: v for k, v in probe_scores(model, identity, data, use_cache=use_cache, progress=progress).items()
                              if not k.startswith("correct")}
        else:
            assert test is not None
            settings = GenerationSettings(max_new_tokens=max_new_tokens or _max_new_tokens(model, test.references),
                                          constraint=Structure("json_schema", json_schema, strict=True) if json_schema else None)
            answers, was_cached = cache.cached(
                cache.key("answers", identity, report["data"]["sha256"], limit, settings.__dict__),
                lambda: generate_answers(model, test.prompts, settings, batch_size=batch_size, label=f"answers {name}",
                                         progress=progress), enabled=use_cache)
            out["answers"], out["cached"] = answers, was_cached
            out["metrics"] = score(task, test, answers, label_list)
            if model.neighbours is not None:  # the run's prompts as in training; the base gets them as given
                out["prompts"] = model.neighbours.listing()
            if json_schema:
                out["metrics"]["valid_json_rate"] = sum(map(_parses, answers)) / max(len(answers), 1)
            if task == "generation":
                ref, _ = cache.cached(cache.key("refloss", identity, report["data"]["sha256"], limit),
                                      lambda: reference_loss(model, test.examples), enabled=use_cache)
                out["metrics"].update(reference_loss=ref["loss"], perplexity=ref["perplexity"])
            if choice:
                held = GenerationSettings(max_new_tokens=settings.max_new_tokens, constraint=Structure.choice(choice))
                constrained, _ = cache.cached(
                    cache.key("answers", identity, report["data"]["sha256"], limit, held.__dict__),
                    lambda: generate_answers(model, test.prompts, held, batch_size=batch_size,
                                             label=f"constrained answers {name}", progress=progress), enabled=use_cache)
                held_metrics = score(task, test, constrained, label_list)
                out["constrained_answers"] = constrained
                out["metrics"].update(accuracy_constrained=held_metrics["accuracy"],
                                      macro_f1_constrained=held_metrics["macro_f1"])
                ranked, _ = cache.cached(cache.key("ranked", identity, report["data"]["sha256"], limit, choice),
                                         lambda: ranked_answers(model, test.prompts, choice, label=f"ranked labels {name}",
                                                                progress=progress), enabled=use_cache)
                ranked_metrics = score(task, test, ranked, label_list)
                out["ranked_answers"] = ranked
                out["metrics"].update(accuracy_ranked=ranked_metrics["accuracy"], macro_f1_ranked=ranked_metrics["macro_f1"])
        if probe_path is not None:
            out["probe"] = probe_scores(model, identity, probe_path, use_cache=use_cache, progress=progress)
        if collapse:
            out["diversity"] = sampled_diversity(model, identity, use_cache=use_cache, progress=progress)
        return out

    report["constrained_to"] = choice
    report["models"]["tuned"] = one("tuned", target, which)
    if baseline is not None:
        report["models"]["base"] = one("base", baseline, "final")
    report["side_by_side"] = _side_by_side(test, report["models"], side_by_side) if test else []
    report["red_flags"] = [f.as_dict() for f in red_flags_for(report, target if is_run else None, probe_path,
                                                                test.references if test else None)]
    report["verdict"] = worst(report["red_flags"])
    if (more := completion(report["red_flags"])):
        report["to_complete"] = more
    report["seconds"] = round(time.time() - t0, 1)
    if save and is_run:
        write_json(RunFolder(target).evals / f"{data.stem}-{report['data']['sha256'][:8]}-{which}.json", report, indent=1)
    return report


def _parses(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def constraint_labels(constrain: str, task: str, labels: list[str] | None, run_dir: str | Path | None,
                      test: Any) -> list[str] | None:
    """The labels that classification decoding is held to (see ``evaluate``'s ``constrain``), or None."""
    if constrain not in ("auto", "labels", "none"):
        raise DataError(f"--constrain {constrain!r} is not known", hint="use auto, labels or none")
    if task != "classification" or constrain == "none":
        return None
    if labels:
        return sorted(set(labels))
    if run_dir is not None:
        from tailored.eval.aftertrain import run_labels

        known = run_labels(RunFolder(run_dir).read())
        if known:
            return known
    if constrain == "labels" and test is not None:  # asked for, and only the test data names labels
        return sorted({r.strip() for r in test.references})
    return None


def red_flags_for(report: dict[str, Any], run_dir: str | Path | None, probe_path: Path | None,
                  references: list[str] | None = None) -> list[Flag]:
    """The three red flags from an evaluation's model results (and the run's curves)."""
    tuned, base = report["models"].get("tuned", {}), report["models"].get("base", {})
    flags = [overfitting(run_dir) if run_dir else Flag("overfitting", "skipped", "not a run folder: no training curves", {}, [])]
    name = probe_path.name if probe_path else "probe"
    flags.append(forgetting(base.get("probe"), tuned.get("probe"), probe_name=name))
    task_labels = None
    if report["task"] == "classification":
        task_labels = [row["label"] for row in tuned.get("metrics", {}).get("per_label", [])]
    flags.append(mode_collapse(base.get("diversity"), tuned.get("diversity"), labels=task_labels,
                               task_answers=tuned.get("answers"), task_references=references))
    return flags


def _side_by_side(test: Any, models: dict[str, Any], n: int) -> list[dict[str, Any]]:
    idx = sorted(random.Random(0).sample(range(len(test.references)), min(n, len(test.references))))
    rows = []
    for i in idx:
        users = [m for m in test.prompts[i] if m.get("role") == "user"]
        row = {"index": i, "prompt": str(users[-1]["content"]) if users else "", "reference": test.references[i]}
        for name, res in models.items():
            if "answers" in res:
                row[name] = res["answers"][i]
        rows.append(row)
    return rows
