"""``compare()``: zero-shot, few-shot, RAG and fine-tuned runs scored on the same held-out set, with costs and a verdict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tailored.compare import prompts as P
from tailored.compare.costs import Pricing, latency
from tailored.compare.index import DocIndex, _build, open_index
from tailored.compare.documents import Chunk
from tailored.compare.quality import quality
from tailored.compare.verdict import verdict
from tailored.config.manifest import RunFolder, is_run_dir
from tailored.data.readers import read_records
from tailored.errors import ConfigError, DataError
from tailored.eval.generate import ChatModel, GenerationSettings, load
from tailored.eval.tasks import detect_task, read_labels, read_test_set
from tailored.methods.runs import base_folder
from tailored.train.progress import Progress

STRATEGIES = ("zero-shot", "few-shot", "rag", "fine-tuned")
CONSTRAINED_NOTE = "label set in the prompt; answers constrained to one of the {n} labels (choice constraint, xgrammar)"
UNCONSTRAINED_NOTE = "label set in the prompt; constrained decoding was not used ({why})"


def _answers(model: ChatModel, convs: list[P.Messages], settings: GenerationSettings, batch_size: int, label: str,
             progress: bool) -> tuple[list[str], list[float], list[int], list[int], float]:
    """Answers in input order, each request's latency (its batch's wall time), prompt and answer tokens, total wall time."""
    n = len(convs)
    answers, lat, ptoks, ntoks = [""] * n, [0.0] * n, [0] * n, [0] * n
    bar = Progress(label, n, unit="answer", enabled=progress, transient=True)
    t_all = time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            t = time.perf_counter()
            out = model.generate_batch([convs[i] for i in idx], settings)
            took = time.perf_counter() - t
            for i, a in zip(idx, out):
                answers[i], lat[i] = a, took
                ptoks[i] = len(model.prompt_ids(convs[i]))
                ntoks[i] = len(model.tokenizer(a, add_special_tokens=False)["input_ids"])
            bar.advance(len(idx))
    finally:
        bar.close()
    return answers, lat, ptoks, ntoks, time.perf_counter() - t_all


def _params(model: ChatModel) -> int:
    return sum(p.numel() for p in model.model.parameters())


def _train_index(pairs: list[P.Pair], vectors: np.ndarray, train: Path) -> DocIndex:
    chunks = [Chunk(f"{train.name} example {i + 1}", 0, p.answer) for i, p in enumerate(pairs)]
    return DocIndex(train, chunks, vectors, _build(vectors), {"path": None, "files": 1, "chunks": len(chunks),
                                                              "reused_files": 0, "embedded_files": 1, "seconds": 0.0})


def compare(
    test: str | Path, *, train: str | Path | None = None, docs: str | Path | None = None, runs: Sequence[str | Path] = (),
    model: str | None = None, task: str = "auto", labels: str | Path | None = None, strategies: Sequence[str] = STRATEGIES,
    limit: int | None = None, shots: int = 8, top_k: int = 3, max_prompt_tokens: int = 1024, max_new_tokens: int | None = None,
    batch_size: int = 1, seed: int = 0, gpu: str = "h100", prices: str | None = None, train_output: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score each strategy on ``test`` and say which one to use, and why.

    Args:
        test: held-out chat data (the last assistant turn of each line is the reference).
        train: training data: few-shot examples, the corpus for RAG without ``docs``, and a run trained with
            defaults when ``runs`` is empty.
        docs: a folder of .txt/.md/.html/.pdf for RAG (indexed once, in ``<DIR>.tailored-index``).
        runs: fine-tuned run folders to score.
        model: the base model (default: the first run's base, else the embedded model).
        task: classification, generation, sql or auto.
        labels: the label set for classification (default: every label in train and test).
        strategies: which of zero-shot, few-shot, rag, fine-tuned to run.
        limit: score only the first N test examples.
        shots: at most this many few-shot examples per query (fewer when they do not fit).
        top_k: chunks retrieved per query for RAG.
        max_prompt_tokens: few-shot examples and RAG chunks are added while the prompt stays within this.
        max_new_tokens: answer length limit (default: from the longest reference).
        batch_size: prompts per generation batch (a request's latency is its batch's wall time).
        seed: tie-breaking of few-shot selection (everything else is greedy and deterministic).
        gpu: the price table's GPU for the cost estimate.
        prices: a YAML file replacing entries of the price table.
        train_output: where the run trained with defaults goes (default: train's own default).
    """
    bad = sorted(set(strategies) - set(STRATEGIES))
    if bad:
        raise DataError(f"--strategies: {', '.join(bad)} not known", hint=f"use some of: {', '.join(STRATEGIES)}")
    for name, value, least in (("shots", shots, 0), ("top_k", top_k, 1), ("max_prompt_tokens", max_prompt_tokens, 16),
                               ("batch_size", batch_size, 1)):
        if value < least:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: must be at least {least}")
    if task == "auto":
        task = detect_task(test)
    if task == "choice":
        raise DataError(f"--test {test}: multiple-choice probes have no prompts to compare strategies on",
                        hint="use chat data (a user turn and the reference answer per line)")
    testset = read_test_set(test, limit)
    train_examples = read_records(train).examples if train else []
    pairs = P.pairs_of(train_examples)
    if train and not pairs:
        raise DataError(f"--train {train}: no example with a user turn and an answer", hint=f"run `tailored data check {train}`")
    label_list = read_labels(labels) if labels else None
    if task == "classification" and label_list is None:
        label_list = sorted({p.answer.strip() for p in pairs} | {r.strip() for r in testset.references})
    system = P.common_system(train_examples)
    pricing = Pricing(gpu, prices)
    runs = [Path(r) for r in runs]
    for r in runs:
        if not is_run_dir(r):
            raise DataError(f"--run {r}: not a run folder (no manifest.json)", hint="pass a folder written by `tailored train`")
    t0 = time.time()
    train_note = None
    if "fine-tuned" in strategies and not runs and train:
        from tailored.train.run import train as train_run

        try:
            runs = [Path(train_run(data=str(train), output=train_output, **({"model": model} if model else {})).run_dir)]
        except DataError as exc:  # e.g. too few examples: the other strategies are still measured, and this is said
            train_note = f"fine-tuned skipped: training on {train} failed: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    base = model or (str(base_folder(RunFolder(runs[0]).read())) if runs else "smollm2")
    report: dict[str, Any] = {"test": {"path": str(Path(test).resolve()), "examples": len(testset.references)},
                              "train": str(Path(train).resolve()) if train else None, "docs": str(Path(docs).resolve()) if docs else None,
                              "task": task, "headline": None, "base_model": str(base), "pricing": pricing.describe(),
                              "settings": {"shots": shots, "top_k": top_k, "max_prompt_tokens": max_prompt_tokens,
                                           "batch_size": batch_size, "seed": seed, "limit": limit},
                              "strategies": [], "notes": []}
    need_embed = ("few-shot" in strategies and pairs) or "rag" in strategies
    vectors = query_vectors = None
    embedder = None
    if need_embed:
        from tailored.models.embeddings import Embedder

        embedder = Embedder()
        query_vectors = embedder.encode([P.last_user(p) for p in testset.prompts]).numpy()
        vectors = embedder.encode([p.user for p in pairs]).numpy() if pairs else None
    base_strats = [s for s in ("zero-shot", "few-shot", "rag") if s in strategies]
    if base_strats:
        chat = load(base)
        count = lambda msgs: len(chat.prompt_ids(msgs))  # noqa: E731
        settings = GenerationSettings(max_new_tokens=max_new_tokens or _max_new(chat, testset.references + (label_list or [])))
        params = _params(chat)
        context = getattr(chat.model.config, "max_position_embeddings", None) or max_prompt_tokens + settings.max_new_tokens
        budget = min(max_prompt_tokens, context - settings.max_new_tokens)  # examples and chunks fit the model's context too
        for name in base_strats:
            row: dict[str, Any] = {"name": name, "model": str(base), "notes": []}
            if name == "zero-shot":
                extra = P.label_instruction(label_list) if task == "classification" and label_list else ""
                convs = [P.with_system(p, extra, system) for p in testset.prompts]
                if extra:
                    constrained, note = _choice(chat, label_list, settings)
                    row["notes"].append(note)
                    row["constrained"] = constrained is not settings
                    report["strategies"].append(_score(row, chat, convs, constrained, batch_size, task, testset, label_list,
                                                       pricing, params, progress))
                    continue
            elif name == "few-shot":
                if not pairs:
                    report["notes"].append("few-shot skipped: it needs --train")
                    continue
                convs, chosen = P.few_shot(testset.prompts, query_vectors, pairs, vectors, count_tokens=count, max_examples=shots,
                                           max_prompt_tokens=budget, seed=seed, default_system=system)
                ks = [len(c) for c in chosen]
                row["shots"] = {"mean": sum(ks) / len(ks), "min": min(ks), "max": max(ks)}
                row["examples_used"] = chosen
            else:
                if docs:
                    index = open_index(docs, embedder)
                elif pairs:
                    index = _train_index(pairs, vectors, Path(train))
                    row["notes"].append("no --docs: TRAIN's answers are the corpus")
                else:
                    report["notes"].append("rag skipped: it needs --docs or --train")
                    continue
                row["index"] = index.stats
                convs, row["sources"] = P.rag(testset.prompts, query_vectors, index, top_k=top_k, count_tokens=count,
                                              max_prompt_tokens=budget, default_system=system)
            report["strategies"].append(_score(row, chat, convs, settings, batch_size, task, testset, label_list, pricing,
                                               params, progress))
        del chat
    if "fine-tuned" in strategies:
        if not runs:
            report["notes"].append(train_note or "fine-tuned skipped: pass --run RUN or --train TRAIN to train one")
        for run in runs:
            chat = load(run)
            settings = GenerationSettings(max_new_tokens=max_new_tokens or _max_new(chat, testset.references))
            convs = [P.with_system(p, "", system) for p in testset.prompts]
            row = {"name": f"fine-tuned: {run.name}", "model": str(run), "notes": [], **_run_facts(run)}
            if chat.neighbours is not None:  # its prompt tokens count the listing, as it was trained to see it
                row["notes"].append(f"prompts: {chat.neighbours.listing()}")
            params = _params(chat)
            row = _score(row, chat, convs, settings, batch_size, task, testset, label_list, pricing, params, progress)
            m = RunFolder(run).read().metrics
            row["training"] = pricing.training(m.seconds if m else 0.0, params, m.real_tokens if m else 0)
            report["strategies"].append(row)
            del chat
    if not report["strategies"]:
        raise DataError("nothing to compare: every strategy was skipped", hint="; ".join(report["notes"]))
    report["headline"] = report["strategies"][0]["quality"]["metric"]
    report["verdict"] = verdict(report)
    report["seconds"] = round(time.time() - t0, 1)
    return report


def _choice(chat: ChatModel, labels: list[str], settings: GenerationSettings) -> tuple[GenerationSettings, str]:
    """Settings that hold the answer to one of ``labels`` (the structured-output engine), or why they cannot."""
    from dataclasses import replace

    from tailored.engine.constraints import ConstraintError, Structure, compile as compile_constraint

    structure = Structure.choice(labels)
    try:
        compile_constraint(structure, chat.tokenizer, chat.stop_ids)  # fails here, not mid-generation
    except ImportError as exc:
        return settings, UNCONSTRAINED_NOTE.format(why=f"the grammar engine is not installed: {exc.name}")
    except ConstraintError as exc:
        return settings, UNCONSTRAINED_NOTE.format(why=str(exc))
    return replace(settings, constraint=structure), CONSTRAINED_NOTE.format(n=len(labels))


def _max_new(chat: ChatModel, refs: list[str]) -> int:
    longest = max((len(chat.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs), default=32)
    return min(256, int(longest * 1.5) + 8)


def _run_facts(run: Path) -> dict[str, Any]:
    import json

    folder = RunFolder(run)
    manifest = folder.read()
    flags: list[dict[str, Any]] = []
    if folder.red_flags.is_file():
        flags = json.loads(folder.red_flags.read_text()).get("flags", [])
    return {"method": manifest.method.name, "train_examples": manifest.data.train.used,
            "red_flags": [{k: f.get(k) for k in ("name", "verdict", "summary")} for f in flags]}


def _score(row: dict[str, Any], chat: ChatModel, convs: list[P.Messages], settings: GenerationSettings, batch_size: int,
           task: str, testset: Any, labels: list[str] | None, pricing: Pricing, params: int, progress: bool) -> dict[str, Any]:
    answers, lat, ptoks, ntoks, wall = _answers(chat, convs, settings, batch_size, f"answers {row['name']}", progress)
    n = len(answers)
    row["quality"] = quality(task, testset, answers, labels)
    row["latency"] = latency(lat)
    row["prompt_tokens"] = sum(ptoks) / n
    row["answer_tokens"] = sum(ntoks) / n
    row["cost_per_1k"] = pricing.per_1k(wall, n, params, row["prompt_tokens"], row["answer_tokens"])
    row["answers"] = answers
    row.setdefault("training", None)
    return row
