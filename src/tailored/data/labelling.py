"""Labelling tools both ways: Label Studio and Prodigy exports in, tasks for labellers out.

In: a Label Studio export (JSON: tasks with ``annotations``; JSON-MIN: one flat object per annotation)
or a Prodigy JSONL becomes chat examples. The answer of a Label Studio task is the result of one control
(``choices`` → the chosen label(s), ``textarea`` → the text; ``--answer-column`` names the control when
there are several); Prodigy's is the accepted ``label``, the chosen ``options`` (``accept``), or a text
field (``user_input``, or ``--answer-column``). With several annotators the majority answer is taken and
every disagreement is reported; a tie is an error (settle it, or take one annotator's answers with
``--annotator``). Rejected, ignored, cancelled and not-yet-labelled items are reported as warnings and
not trained.

Out: :func:`export_for_labelling` writes examples (say, a model's answers to review) as Label Studio
tasks with the answer pre-filled as a *prediction*, plus the labelling config to paste in the project,
or as a CSV with an editable ``answer`` column. Importing the labelled file back gives training examples.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from tailored.data.imports import ANSWER_COLUMNS, PRODIGY_KEYS, ImportOptions, ImportResult, Layout, load_json
from tailored.data.jsonl import iter_objects
from tailored.data.records import Example, Problem
from tailored.data.tables import Columns, cell_text, find_column, make_example
from tailored.errors import DataError

LS_META = ("id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "drafts",
           "predictions", "annotations", "total_annotations", "cancelled_annotations", "total_predictions")
TEXT_RESULTS = ("textarea",)
LABEL_RESULTS = ("choices", "taxonomy", "rating", "number", "datetime")
REJECTED = "\x00rejected"


# ---- votes -----------------------------------------------------------------------------------
@dataclass
class Vote:
    who: str
    names: tuple[str, ...]  # every name the annotator can be chosen by (id, email, session)
    value: str
    ground_truth: bool = False


def _shown(value: str) -> str:
    return "rejected" if value == REJECTED else repr(value if len(value) <= 60 else value[:57] + "...")


def decide(votes: list[Vote], number: int, unit: str, opts: ImportOptions, problems: list[Problem],
           stats: Counter) -> str | None:
    """The answer of one item: the chosen annotator's, the ground truth, the majority; or None after saying why."""
    if opts.annotator:
        wanted = opts.annotator.strip().casefold()
        mine = [v for v in votes if any(n.casefold() == wanted or n.casefold().endswith("-" + wanted) for n in v.names)]
        if not mine:
            problems.append(Problem(number, "not_annotated", f"no answer by annotator {opts.annotator!r}: not trained",
                                    severity="warning", unit=unit))
            return None
        return mine[-1].value
    if not votes:
        return None
    counts = Counter(v.value for v in votes)
    if len(counts) == 1:
        return votes[0].value
    stats["disagreements"] += 1
    said = "; ".join(f"{_shown(value)} by {', '.join(v.who for v in votes if v.value == value)}" for value, _ in counts.most_common())
    truth = [v for v in votes if v.ground_truth]
    if truth:
        problems.append(Problem(number, "annotators_disagree", f"annotators disagree ({said}); the ground-truth "
                                f"annotation ({truth[-1].who}) is used", severity="warning", unit=unit))
        return truth[-1].value
    (top, n_top), (_, n_next) = counts.most_common(2)
    if n_top > n_next:
        problems.append(Problem(number, "annotators_disagree", f"annotators disagree ({said}); the majority answer "
                                f"{_shown(top)} is used", severity="warning", unit=unit))
        return top
    problems.append(Problem(number, "annotators_disagree", f"annotators disagree with no majority ({said}): settle it, or "
                            "take one annotator's answers with --annotator NAME", unit=unit))
    return None


# ---- Label Studio ------------------------------------------------------------------------------
def _ls_value(item: dict[str, Any]) -> tuple[str | None, str | None]:
    """(answer text, problem) of one Label Studio result."""
    kind, value = str(item.get("type", "")).lower(), item.get("value") or {}
    if kind == "choices":
        return ", ".join(str(c) for c in value.get("choices") or []), None
    if kind == "textarea":
        return "\n".join(str(t) for t in value.get("text") or []), None
    if kind == "taxonomy":
        return ", ".join(" / ".join(str(p) for p in path) for path in value.get("taxonomy") or []), None
    if kind in ("rating", "number", "datetime"):
        return cell_text(value.get(kind)), None
    return None, f"result type {kind!r} (regions or spans) cannot become a chat answer"


def _min_value(value: Any) -> str:
    """A JSON-MIN answer: a plain string, or the raw result when it is not a single choice/text."""
    if isinstance(value, dict):
        for key in ("choices", "text", "taxonomy"):
            if key in value:
                return cell_text(value[key]) if key != "text" else "\n".join(map(str, value[key]))
    return cell_text(value)


def _annotator(ann: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    by = ann.get("completed_by")
    names: list[str] = []
    if isinstance(by, dict):
        names += [str(by[k]) for k in ("email", "id", "username") if by.get(k) is not None]
    elif by is not None:
        names.append(str(by))
    if ann.get("created_username"):  # "alice@example.com, 3" in recent exports
        names += [part.strip() for part in str(ann["created_username"]).split(",") if part.strip()]
    names = list(dict.fromkeys(names)) or ["(unknown)"]
    shown = next((n for n in names if "@" in n), names[0])
    return shown, tuple(names)


def read_label_studio(path: Path, opts: ImportOptions, *, minimal: bool) -> ImportResult:
    tasks = load_json(path)
    if not isinstance(tasks, list):
        raise DataError(f"{path}: a Label Studio export is a JSON list of tasks", hint="export as JSON or JSON-MIN")
    kind = "label-studio-min" if minimal else "label-studio"
    layout = Layout(kind=kind, path=str(path), unit="task")
    result = ImportResult(format=kind, layout=layout)
    stats: Counter = Counter()
    annotators: dict[str, None] = {}
    items: list[tuple[int, dict[str, Any], list[Vote]]] = []
    if minimal:
        columns: list[str] = []
        groups: dict[Any, list[dict[str, Any]]] = {}
        for i, row in enumerate(tasks, start=1):
            if not isinstance(row, dict):
                result.problems.append(Problem(i, "not_an_object", f"item {i} is not an object", unit="task"))
                continue
            groups.setdefault(row.get("id", f"#{i}"), []).append(row)
            columns += [k for k in row if k not in columns and k not in LS_META]
        cols = Columns.resolve(path, columns, opts)
        for n, (task_id, rows) in enumerate(groups.items(), start=1):
            number = task_id if isinstance(task_id, int) else n
            votes = []
            for row in rows:
                who = cell_text(row.get("annotator")) or "(unknown)"
                annotators[who] = None
                value = _min_value(row.get(cols.answer))
                if value.strip():
                    votes.append(Vote(who, (who,), value))
            items.append((number, rows[0], votes))
        control = cols.answer
    else:
        controls: dict[str, str] = {}
        columns = []
        for task in tasks:
            if isinstance(task, dict):
                columns += [k for k in (task.get("data") or {}) if k not in columns]
                for ann in (task.get("annotations") or []) + (task.get("predictions") or []):
                    for item in ann.get("result") or [] if isinstance(ann, dict) else []:
                        if isinstance(item, dict) and item.get("from_name"):
                            controls.setdefault(item["from_name"], str(item.get("type", "")))
        control = _pick_control(path, controls, opts)
        cols = Columns.resolve(path, columns, ImportOptions(**{**opts.__dict__, "answer_column": None}), need_answer=False)
        for n, task in enumerate(tasks, start=1):
            if not isinstance(task, dict):
                result.problems.append(Problem(n, "not_an_object", f"item {n} is not an object", unit="task"))
                continue
            number = task["id"] if isinstance(task.get("id"), int) else n
            votes = []
            for ann in task.get("annotations") or []:
                who, names = _annotator(ann)
                annotators[who] = None
                if ann.get("was_cancelled"):
                    stats["cancelled"] += 1
                    result.problems.append(Problem(number, "cancelled_annotation", f"{who} skipped this task in Label Studio",
                                                   severity="warning", unit="task"))
                    continue
                mine = [r for r in ann.get("result") or [] if isinstance(r, dict) and r.get("from_name") == control]
                if not mine:
                    continue
                values, bad = [], None
                for r in mine:
                    value, bad = _ls_value(r)
                    if bad:
                        break
                    values.append(value or "")
                if bad:
                    result.problems.append(Problem(number, "unsupported_result", f"{who}'s answer in {control!r}: {bad}",
                                                   unit="task", column=control))
                    continue
                value = "\n".join(v for v in values if v)
                if value.strip():
                    votes.append(Vote(who, names, value, bool(ann.get("ground_truth"))))
            items.append((number, task.get("data") or {}, votes))
    for number, cells, votes in items:
        result.n_lines += 1
        answer = decide(votes, number, "task", opts, result.problems, stats)
        if answer is None:
            if not votes:
                stats["unlabelled"] += 1
                result.problems.append(Problem(number, "not_annotated", "no answer yet (not labelled, or labelled "
                                               f"without {control!r}): not trained", severity="warning", unit="task"))
            continue
        ex = _task_example(number, cells, cols, answer, result.problems)
        if ex is not None:
            result.examples.append(ex)
    layout.rows, layout.columns = result.n_lines, columns
    described = cols.describe()
    layout.prompt, layout.system = described["prompt"], described["system"]
    if any(isinstance(c.get("messages"), list) for _, c, _ in items):
        layout.prompt = "data 'messages' (the conversation before the answer), else " + layout.prompt
    layout.answer = f"control {control!r}" + (f" of annotator {opts.annotator!r}" if opts.annotator else
                                              " (the majority when annotators disagree)")
    names = list(annotators)
    layout.notes.append(f"{len(names)} annotator(s): {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
                        + (f"; they disagree on {stats['disagreements']} task(s)" if stats["disagreements"] else ""))
    if stats["unlabelled"] or stats["cancelled"]:
        layout.notes.append(f"{stats['unlabelled']} task(s) without an answer, {stats['cancelled']} skipped annotation(s): "
                            "not trained (listed as warnings)")
    if result.n_lines == 0:
        result.problems.append(Problem(0, "empty_file", "the export has no tasks"))
    return result


def _pick_control(path: Path, controls: dict[str, str], opts: ImportOptions) -> str:
    """The control (``from_name``) whose results are the answers."""
    if opts.answer_column:
        found = find_column(list(controls), opts.answer_column)
        if found is None:
            raise DataError(f"{path}: no control {opts.answer_column!r} in the annotations; the controls are: "
                            f"{', '.join(f'{n} ({t})' for n, t in controls.items()) or '(none: nothing is labelled)'}",
                            hint="--answer-column names the control (its name= in the labelling config)")
        return found
    if len(controls) == 1:
        return next(iter(controls))
    by_name = next((c for c in (find_column(list(controls), n) for n in ANSWER_COLUMNS) if c), None)
    if by_name:
        return by_name
    raise DataError(f"{path}: which control holds the answer? The controls are: "
                    f"{', '.join(f'{n} ({t})' for n, t in controls.items()) or '(none: nothing is labelled yet)'}",
                    hint="name it with --answer-column")


def _task_example(number: int, cells: dict[str, Any], cols: Columns, answer: str, problems: list[Problem]) -> Example | None:
    context = cells.get("messages")
    if isinstance(context, list) and context:  # written by export_for_labelling: the conversation before the answer
        return make_example(number, None, context, answer, problems, unit="task", tools=cells.get("tools"))

    def say(message: str, *, column: str | None = None, severity: str = "error") -> None:
        problems.append(Problem(number, "empty_cell", message, severity=severity, column=column, unit="task"))

    user = cols.user_turn(cells, say)
    if user is None:
        return None
    return make_example(number, cols.system_of(cells), user, answer, problems, unit="task")


# ---- Prodigy ---------------------------------------------------------------------------------
def _prodigy_answer(obj: dict[str, Any], opts: ImportOptions) -> tuple[str | None, str]:
    """(answer, where it came from) of an accepted Prodigy line."""
    if opts.answer_column:
        return cell_text(obj.get(opts.answer_column)), f"field {opts.answer_column!r}"
    if isinstance(obj.get("accept"), list):
        ids = obj["accept"]
        options = {o.get("id"): o for o in obj.get("options") or [] if isinstance(o, dict)}
        chosen = [str(i) if not isinstance(i, int) or i not in options else str(options[i].get("text", i)) for i in ids]
        return ", ".join(chosen), "chosen options ('accept')"
    for key in ("user_input", *ANSWER_COLUMNS):
        if key != "answer" and isinstance(obj.get(key), str) and obj[key].strip():
            return obj[key], f"field {key!r}"
    return None, ""


def read_prodigy(path: Path, opts: ImportOptions) -> ImportResult:
    layout = Layout(kind="prodigy", path=str(path), unit="line")
    result = ImportResult(format="prodigy", layout=layout)
    parsed = list(iter_objects(path, result.problems))  # lines end at \n only (see data/jsonl.py)
    columns: list[str] = []
    for _, obj in parsed:
        columns += [k for k in obj if k not in columns and k not in PRODIGY_KEYS]
    cols = Columns.resolve(path, columns, ImportOptions(**{**opts.__dict__, "answer_column": None}), need_answer=False)
    who_of = lambda o: str(o.get("_annotator_id") or o.get("_session_id") or "")  # noqa: E731
    several = len({who_of(o) for _, o in parsed}) > 1
    groups: dict[Any, list[tuple[int, dict[str, Any]]]] = {}
    for n, obj in parsed:
        key = obj.get("_task_hash", f"#{n}") if several else f"#{n}"
        groups.setdefault(key, []).append((n, obj))
    stats: Counter = Counter()
    sources: Counter = Counter()
    for members in groups.values():
        number, cells = members[0]
        result.n_lines += 1
        votes = []
        for n, obj in members:
            who = who_of(obj) or "(the annotator)"
            answer = obj.get("answer")
            stats[str(answer)] += 1
            if answer == "ignore":
                result.problems.append(Problem(n, "ignored", f"ignored by {who}: not trained", severity="warning"))
                continue
            if answer == "reject":
                votes.append(Vote(who, (who,), REJECTED))
                continue
            if answer != "accept":
                result.problems.append(Problem(n, "bad_answer", f"'answer' is {answer!r}; Prodigy writes accept, reject "
                                               "or ignore"))
                continue
            value, source = _prodigy_answer(obj, opts)
            if value is None or not value.strip():
                result.problems.append(Problem(n, "empty_cell", "accepted, but there is no answer in it (no 'accept' "
                                               "options, 'label' or text field; name it with --answer-column)",
                                               column=opts.answer_column))
                continue
            sources[source] += 1
            votes.append(Vote(who, (who,), value))
        if not votes:
            continue
        value = decide(votes, number, "line", opts, result.problems, stats)
        if value is None:
            continue
        if value == REJECTED:
            label = cell_text(cells.get("label"))
            result.problems.append(Problem(number, "rejected", f"rejected by {', '.join(v.who for v in votes if v.value == REJECTED)}"
                                           + (f" (label {label!r})" if label else "") + ": not trained", severity="warning"))
            continue

        def say(message: str, *, column: str | None = None, severity: str = "error", number: int = number) -> None:
            result.problems.append(Problem(number, "empty_cell", message, severity=severity, column=column))

        user = cols.user_turn(cells, say)
        if user is not None:
            ex = make_example(number, cols.system_of(cells), user, value, result.problems, unit="line")
            if ex is not None:
                result.examples.append(ex)
    described = cols.describe()
    layout.rows, layout.columns = result.n_lines, columns
    layout.prompt, layout.system = described["prompt"], described["system"]
    layout.answer = " / ".join(sources) or "the accepted 'label', chosen options or text field"
    layout.notes.append(f"answers: {stats['accept']} accept, {stats['reject']} reject, {stats['ignore']} ignore "
                        "(rejected and ignored lines are not trained)")
    if several:
        layout.notes.append(f"{len({who_of(o) for _, o in parsed})} annotators; lines of the same _task_hash are one item"
                            + (f"; they disagree on {stats['disagreements']}" if stats["disagreements"] else ""))
    if result.n_lines == 0:
        result.problems.append(Problem(0, "empty_file", "the file has no lines"))
    return result


# ---- export for labelling ----------------------------------------------------------------------
EXPORT_TARGETS = ("label-studio", "csv")


@dataclass
class Exported:
    output: str
    to: str
    tasks: int
    kind: str  # textarea or choices
    config: str | None = None  # the labelling config file (Label Studio)
    labels: list[str] = field(default_factory=list)

    def render(self) -> str:
        out = [f"wrote {self.tasks} task(s) for labelling to {self.output} ({self.to}; answers as {self.kind})"]
        if self.config:
            out += [f"labelling config: {self.config}",
                    "next: in Label Studio create a project, paste the config (Settings > Labeling Interface > Code),",
                    f"      import {Path(self.output).name}: each task opens with the answer pre-filled (a prediction);",
                    "      review/correct and submit, then Export > JSON (or JSON-MIN) and:",
                    "      tailored data convert EXPORT.json -o train.jsonl --to chat"]
        else:
            out += ["next: correct the 'answer' column (the model's answer is pre-filled; 'model_answer' keeps it), then:",
                    f"      tailored data convert {Path(self.output).name} -o train.jsonl --to chat"]
        return "\n".join(out)


def _split_answer(ex: Example, problems: list[str]) -> tuple[list[dict[str, Any]], str] | None:
    if ex.text is not None or ex.chosen is not None:
        problems.append(f"line {ex.line}: plain-text and preference examples have no single answer to review")
        return None
    msgs = ex.messages
    if not msgs or msgs[-1].get("role") != "assistant" or len(msgs) < 2:
        problems.append(f"line {ex.line}: the last message must be the (model's) answer")
        return None
    return msgs[:-1], str(msgs[-1].get("content") or "")


def _choice_like(answers: list[str]) -> bool:
    distinct = set(answers)
    return (len(answers) >= 2 and 2 <= len(distinct) <= min(100, max(2, len(answers) // 2))
            and all("\n" not in a and len(a) <= 64 for a in distinct))


def label_config(kind: str, labels: list[str], *, with_system: bool) -> str:
    system = '  <Header value="System prompt"/>\n  <Text name="system" value="$system"/>\n' if with_system else ""
    if kind == "choices":
        answer = ('  <Header value="Answer (the model\'s is pre-selected)"/>\n'
                  '  <Choices name="answer" toName="prompt" choice="single" showInline="false" required="true">\n'
                  + "".join(f"    <Choice value={quoteattr(label)}/>\n" for label in labels) + "  </Choices>\n")
    else:
        answer = ('  <Header value="Answer (the model\'s is pre-filled: correct it, then submit)"/>\n'
                  '  <TextArea name="answer" toName="prompt" editable="true" maxSubmissions="1" rows="6" required="true"/>\n')
    return f'<View>\n{system}  <Header value="Prompt"/>\n  <Text name="prompt" value="$prompt"/>\n{answer}</View>\n'


def export_for_labelling(path: str | Path, output: str | Path, *, to: str = "label-studio", format: str = "auto",
                         model_version: str = "tailored", answer_kind: str = "auto",
                         labels: list[str] | None = None) -> Exported:
    """Write the examples of ``path`` as tasks a labeller can open, the last answer pre-filled.

    Args:
        path: any file :func:`read_records` reads (chat JSONL with the model's answers, a CSV, ...).
        output: the tasks: Label Studio JSON (plus ``OUTPUT.label-config.xml``) or a CSV.
        to: ``label-studio`` or ``csv``.
        model_version: the name shown on Label Studio predictions.
        answer_kind: ``textarea`` (free text), ``choices`` (a label set), or ``auto`` (choices when the answers
            look like labels: single short lines, at most one distinct answer per two examples).
        labels: more labels to offer as choices than the answers hold (choices only).
    """
    from tailored.config.files import atomic_write
    from tailored.data.readers import read_records

    if to not in EXPORT_TARGETS:
        raise DataError(f"--to {to}: unknown target", hint=f"use one of: {', '.join(EXPORT_TARGETS)}")
    read = read_records(path, format=format)
    errors = [p for p in read.problems if p.severity == "error"]
    if errors:
        raise DataError(f"{path}: {len(errors)} invalid item(s), first at {errors[0].where}: {errors[0].message}",
                        hint="run `tailored data check` first; nothing is dropped silently")
    refused: list[str] = []
    pairs = [(ex, split) for ex in read.examples if (split := _split_answer(ex, refused)) is not None]
    if refused:
        raise DataError(f"{path}: {len(refused)} example(s) cannot be exported:\n  " + "\n  ".join(refused[:20]),
                        hint="export chat examples that end with the answer to review")
    if not pairs:
        raise DataError(f"{path}: no examples to export", hint="give a file with examples")
    answers = [answer for _, (_, answer) in pairs]
    kind = answer_kind if answer_kind != "auto" else ("choices" if labels or _choice_like(answers) else "textarea")
    if kind not in ("textarea", "choices"):
        raise DataError(f"--answer-kind {answer_kind}: expected auto, textarea or choices", hint="auto picks for you")
    labels = sorted(set(answers) | set(labels or [])) if kind == "choices" else []
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if to == "csv":
        rows = []
        for ex, (context, answer) in pairs:
            system = [m for m in context if m.get("role") == "system"]
            rest = [m for m in context if m.get("role") != "system"]
            if [m.get("role") for m in rest] != ["user"] or len(system) > 1 or ex.tools:
                refused.append(f"line {ex.line}: a CSV row holds one prompt and its answer; this example has roles "
                               f"{[m.get('role') for m in ex.messages]}")
                continue
            rows.append({"id": ex.line, "system": system[0]["content"] if system else "", "prompt": rest[0]["content"],
                         "answer": answer, "model_answer": answer})
        if refused:
            raise DataError(f"{path}: {len(refused)} example(s) do not fit a CSV row:\n  " + "\n  ".join(refused[:20]),
                            hint="export multi-turn or tool conversations with --to label-studio")
        fields = ["id", *(["system"] if any(r["system"] for r in rows) else []), "prompt", "answer", "model_answer"]
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(output, ("\ufeff" + buf.getvalue()).encode("utf-8"))  # the BOM: Excel then reads UTF-8
        return Exported(str(output), to, len(rows), kind, labels=labels)
    tasks = []
    with_system = False
    for ex, (context, answer) in pairs:
        system = [m for m in context if m.get("role") == "system"]
        rest = [m for m in context if m.get("role") != "system"]
        data: dict[str, Any] = {}
        if [m.get("role") for m in rest] == ["user"] and len(system) <= 1 and not ex.tools:
            data["prompt"] = rest[0]["content"]
            if system:
                data["system"], with_system = system[0]["content"], True
        else:  # a conversation: shown as a transcript, kept whole for the way back
            data["prompt"] = "\n\n".join(f"[{m.get('role')}] {m.get('content') or ''}" for m in context)
            data["messages"] = context
            if ex.tools:
                data["tools"] = ex.tools
        value = {"choices": [answer]} if kind == "choices" else {"text": [answer]}
        tasks.append({"data": data, "meta": {"source_line": ex.line},
                      "predictions": [{"model_version": model_version,
                                       "result": [{"id": f"answer-{ex.line}", "from_name": "answer", "to_name": "prompt",
                                                   "type": kind, "value": value}]}]})
    if with_system:
        for task in tasks:
            task["data"].setdefault("system", "")
    atomic_write(output, json.dumps(tasks, ensure_ascii=False, indent=2).encode("utf-8"))
    config = output.with_name(output.stem + ".label-config.xml")
    atomic_write(config, label_config(kind, labels, with_system=with_system).encode("utf-8"))
    return Exported(str(output), to, len(tasks), kind, str(config), labels)
