"""``advise()``: inspect the data cheaply and recommend prompting, RAG or fine-tuning, with reasons and the command to confirm.

Nothing heavy runs: the data is read and counted (task, size, labels, answer lengths, duplicates,
facts in the answers that the prompts do not hold, and whether the documents hold them), and for
fine-tuning the pre-flight estimate (:func:`tailored.estimate.estimate`, matmul calibration on CPU)
gives memory, time and money. Every recommendation ends with ``tailored compare ...``, which measures.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from tailored.compare.documents import document_files, read_document
from tailored.compare.prompts import pairs_of
from tailored.data.readers import read_records
from tailored.errors import DataError
from tailored.eval.tasks import detect_task

FACT = re.compile(r"\b(?:\d[\d,.:/-]*\d|\d|[A-Z][a-z]+(?:[A-Z][a-z]+)*)\b")


def _facts(text: str) -> set[str]:
    """Numbers and capitalised words after a sentence's first word: the checkable facts of an answer."""
    words = FACT.findall(text)
    first = set(re.findall(r"(?:^|[.!?]\s+)([A-Z][a-z]+)", text))
    return {w.lower() for w in words if w not in first}


def inspect(data: str | Path, docs: str | Path | None = None) -> dict[str, Any]:
    """The facts about the data that the recommendation rests on."""
    read = read_records(data)
    if not read.examples:
        raise DataError(f"--data {data}: no valid examples", hint=f"run `tailored data check {data}`")
    pairs = pairs_of(read.examples)
    if not pairs:
        raise DataError(f"--data {data}: no example has a user turn and an answer", hint="advise needs labelled pairs (chat data)")
    task = detect_task(data)
    answers = [p.answer.strip() for p in pairs]
    words = sorted(len(a.split()) for a in answers)
    prompts = Counter(p.user.strip().lower() for p in pairs)
    with_facts = [(p, _facts(p.answer) - _facts(p.user) - {w.lower() for w in re.findall(r"\w+", p.user)}) for p in pairs]
    novel = [f for _, f in with_facts if f]
    out: dict[str, Any] = {
        "path": str(data), "examples": len(pairs), "task": task, "invalid_lines": sum(1 for p in read.problems if p.severity == "error"),
        "labels": len(set(answers)) if task == "classification" else None,
        "answer_words": {"median": words[len(words) // 2], "max": words[-1]},
        "duplicate_prompts": sum(c - 1 for c in prompts.values() if c > 1),
        "answers_with_new_facts": len(novel) / len(pairs),
        "structured_answers": sum(a.startswith(("{", "[", "SELECT", "select", "<")) for a in answers) / len(answers),
    }
    if docs:
        text = " ".join(read_document(f) for f in document_files(docs)).lower()
        facts = [w for f in novel for w in f]
        out["docs"] = {"path": str(docs), "files": len(document_files(docs)), "characters": len(text),
                       "answer_facts_in_docs": sum(w in text for w in facts) / len(facts) if facts else None}
    return out


def _estimate(data: str | Path, gpu: str | None, model: str | None) -> dict[str, Any] | None:
    from tailored.estimate import estimate

    try:
        est = estimate(data=str(data), device=gpu or "cpu", calibrate="matmul", **({"model": model} if model else {}))
    except Exception as exc:  # an estimate that cannot be made must not hide the advice; say why
        return {"error": f"{type(exc).__name__}: {exc}"}
    d = est.to_dict()
    device_usd = next((v for k, v in d["money_usd"].items() if k.split(" ")[0] == d["device"]), None)
    return {"device": d["device"], "method": d["settings"].get("method"), "epochs": d["epochs"], "steps": d["steps"],
            "memory_gib": d["memory"]["gib"]["total"], "fits": d["fits"], "seconds": d["seconds"], "usd": device_usd,
            "money_usd": d["money_usd"]}


def advise(data: str | Path, *, docs: str | Path | None = None, test: str | Path | None = None, gpu: str | None = None,
           budget: float | None = None, model: str | None = None, estimate: bool = True) -> dict[str, Any]:
    """A recommendation (prompt engineering, RAG or fine-tuning) with its reasons, settings, estimate and commands.

    Args:
        data: training data (labelled pairs).
        docs: a documents folder, if the knowledge lives in documents.
        test: a held-out file for the confirming ``tailored compare`` command.
        gpu: the price table's GPU for the fine-tuning estimate (default: this machine).
        budget: the most the user will spend on training, USD.
        model: the base model (default: the embedded one).
        estimate: run the pre-flight estimate for fine-tuning.
    """
    facts = inspect(data, docs)
    n, task = facts["examples"], facts["task"]
    reasons: list[str] = []
    in_docs = (facts.get("docs") or {}).get("answer_facts_in_docs")
    if docs and in_docs is not None and in_docs >= 0.5:
        choice = "rag"
        reasons.append(f"{in_docs:.0%} of the facts in the answers (names, numbers) appear in the documents: retrieval brings them "
                       "in at answer time, and stays right when the documents change")
        reasons.append(f"{facts['answers_with_new_facts']:.0%} of the answers hold facts their prompts do not: fine-tuning on "
                       f"{n} examples teaches format and behaviour, not reliable recall of facts")
    elif n < 50:
        choice = "prompt"
        reasons.append(f"only {n} examples: too few to fine-tune reliably; put the best of them in the prompt (few-shot)")
    else:
        choice = "fine-tune"
        if task == "classification":
            reasons.append(f"classification into {facts['labels']} labels with {n} examples (~{n / max(facts['labels'], 1):.0f} per "
                           "label): a fine-tune answers with a bare label and a short prompt; few-shot needs examples in every prompt")
        if facts["structured_answers"] >= 0.5:
            reasons.append(f"{facts['structured_answers']:.0%} of the answers have a fixed structure (JSON/SQL/markup): format is "
                           "what fine-tuning teaches best")
        if facts["answers_with_new_facts"] >= 0.5 and not docs:
            reasons.append(f"{facts['answers_with_new_facts']:.0%} of the answers hold facts their prompts do not: if those facts "
                           "live in documents, pass --docs; RAG may beat fine-tuning for knowledge")
        reasons.append(f"{n} labelled examples are enough for a LoRA run with the defaults")
    if facts["duplicate_prompts"]:
        reasons.append(f"{facts['duplicate_prompts']} repeated prompts: run `tailored data clean {data}` first")
    settings: dict[str, Any] = {}
    est = None
    if choice == "fine-tune":
        settings = {"method": "lora (the default)", "other settings": "train's defaults (epochs and batch size auto from the data)"}
        est = _estimate(data, gpu, model) if estimate else None
        cost = (est or {}).get("usd")
        if budget is not None and isinstance(cost, (int, float)) and cost > budget:
            reasons.append(f"the estimate (${cost:.2f}) is over the budget (${budget:.2f}): try QLoRA (--method qlora) or few-shot first")
    test_arg = str(test) if test else "TEST.jsonl"
    confirm = ["tailored", "compare", "--test", test_arg, "--train", str(data)] + (["--docs", str(docs)] if docs else [])
    commands = [" ".join(map(shlex.quote, confirm))]
    if choice == "fine-tune":
        commands.insert(0, " ".join(map(shlex.quote, ["tailored", "train", "--data", str(data)] + (["--model", model] if model else []))))
    if not test:
        reasons.append(f"no --test: hold out a test set first (`tailored data split {data}`) and confirm by measurement")
    names = {"rag": "RAG over the documents", "prompt": "prompt engineering (few-shot)", "fine-tune": "fine-tuning (LoRA)"}
    return {"recommendation": choice, "title": names[choice], "reasons": reasons, "settings": settings, "estimate": est,
            "commands": commands, "data": facts}


def render_advice(advice: dict[str, Any]) -> str:
    d = advice["data"]
    lines = [f"data: {d['examples']} examples, task {d['task']}" + (f", {d['labels']} labels" if d.get("labels") else "")
             + f", answers {d['answer_words']['median']} words (median, max {d['answer_words']['max']})",
             f"recommendation: {advice['title']}"]
    lines += [f"  - {r}" for r in advice["reasons"]]
    for k, v in advice["settings"].items():
        lines.append(f"  setting {k}: {v}")
    est = advice.get("estimate")
    if est and "error" not in est:
        fits = {True: " (fits)", False: " (does NOT fit: see `tailored estimate`)"}.get(est["fits"], "")
        usd = f", ${est['usd']:.2f}" if isinstance(est.get("usd"), (int, float)) else ""
        lines.append(f"  estimate on {est['device']}: {est['steps']} steps over {est['epochs']} epochs, {est['memory_gib']:.2f} GiB"
                     f"{fits}, {est['seconds']:.0f} s{usd} (`tailored estimate --data ...` for the detail)")
    elif est:
        lines.append(f"  estimate not available: {est['error']}")
    lines.append("run:")
    lines += [f"  {c}" for c in advice["commands"]]
    return "\n".join(lines)
