"""``tailored drift RUN``: the run's training inputs against its traffic; the report, its history and the fix.

Traffic comes as records (``{"messages", "answer", "feedback", "id", "created_at"}``): from a JSONL file
(:func:`read_traffic`; chat lines work as they are, a final assistant turn being the answer) or from the
server's traffic log (the CLI reads it; see :mod:`tailored.serve.traffic`). The training embeddings are
cached in the run folder (``drift/``), keyed by the training file's hash. Each check appends a line to
``drift/history.jsonl`` (what a dashboard plots over time) and writes the full report beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tailored.config.files import atomic_write, write_json
from tailored.config.manifest import Manifest, RunFolder
from tailored.data.jsonl import iter_json
from tailored.data.readers import read_records
from tailored.drift.compare import DriftReport, Sample, compare
from tailored.errors import DataError

MIN_TRAFFIC = 20  # fewer inputs than this cannot tell drift from chance


def text_of(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def input_text(messages: list[dict[str, Any]]) -> str:
    """What the user asked: the last user turn (the system prompt is the same for every request)."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return text_of(users[-1].get("content")) if users else ""


def read_traffic(path: str | Path) -> list[dict[str, Any]]:
    """Traffic records from a JSONL file: chat lines (a final assistant turn is the answer) or logged records."""
    out = []
    for line, obj, problem in iter_json(path):
        if problem is not None:
            raise DataError(f"{path}:{line}: {problem.message}", hint="one JSON object per line, with 'messages'")
        messages = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(messages, list) or not input_text(messages).strip():
            raise DataError(f"{path}:{line}: expected an object with 'messages' holding a user turn",
                            hint='e.g. {"messages": [{"role": "user", "content": "..."}]}')
        answer = obj.get("answer")
        if answer is None and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            answer, messages = text_of(messages[-1].get("content")), messages[:-1]
        out.append({"id": str(obj.get("id") or line), "messages": messages, "answer": answer,
                    "feedback": obj.get("feedback"), "correction": obj.get("correction"),
                    "created_at": obj.get("created_at")})
    return out


def training_texts(manifest: Manifest) -> tuple[list[str], list[str | None]]:
    """(inputs, answers) of the run's training data, read from where the manifest says it was."""
    path = Path(manifest.data.train.path)
    if not path.is_file():
        raise DataError(f"the run's training data {path} is not there any more",
                        hint="drift compares traffic with the training inputs: restore the file (sha256 "
                             f"{manifest.data.train.sha256[:12]}) at that path")
    examples = read_records(path).examples
    texts = [input_text(e.messages) if e.text is None else e.text for e in examples]
    return texts, [e.assistant_text() for e in examples]


class Embeddings:
    """MiniLM embeddings, computed shortest-first (less padding) and returned in the given order.

    More than ``CHUNK`` texts show a progress bar (rate and ETA) when ``progress`` is on.
    """

    CHUNK = 512

    def __init__(self, embedder: Any = None, *, progress: bool = False) -> None:
        self._embedder, self.progress = embedder, progress

    def __call__(self, texts: list[str]) -> np.ndarray:
        from tailored.train.progress import Progress

        if self._embedder is None:
            from tailored.models.embeddings import Embedder

            self._embedder = Embedder()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        bar = Progress("embedding", len(texts), unit="text", enabled=self.progress and len(texts) > self.CHUNK,
                       transient=True)
        parts = []
        for i in range(0, len(order), self.CHUNK):
            parts.append(self._embedder.encode([texts[j] for j in order[i:i + self.CHUNK]]).numpy())
            bar.advance(len(parts[-1]))
        bar.close()
        vectors = np.concatenate(parts) if parts else np.zeros((0, 384), np.float32)
        out = np.empty_like(vectors)
        out[order] = vectors
        return out


def _training_embeddings(run: RunFolder, manifest: Manifest, texts: list[str], embed: Callable) -> np.ndarray:
    from safetensors.numpy import load_file, save_file

    cache = run.path / "drift" / f"training-{manifest.data.train.sha256[:16]}.safetensors"
    if cache.is_file():
        found = load_file(str(cache))["embeddings"]
        if len(found) == len(texts):
            return found
    vectors = embed(texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"embeddings": np.ascontiguousarray(vectors)}, str(tmp))
    tmp.replace(cache)
    return vectors


def check(run_dir: str | Path, records: list[dict[str, Any]], *, since: str | None = None, seed: int = 0,
          embed: Callable[[list[str]], np.ndarray] | None = None, write: bool = True) -> DriftReport:
    """Compare ``records`` (traffic) with the run's training inputs; the report (also written into the run folder).

    Raises:
        DataError: fewer than ``MIN_TRAFFIC`` inputs, or the training data is gone.
    """
    from tailored.eval.aftertrain import train_labels

    run = RunFolder(run_dir)
    manifest = run.read()
    if len(records) < MIN_TRAFFIC:
        raise DataError(f"{len(records)} traffic input(s){' since ' + since if since else ''}: too few to tell drift "
                        f"from chance (at least {MIN_TRAFFIC})",
                        hint="log more traffic (`tailored serve --log-requests`) or pass --traffic FILE")
    embed = embed or Embeddings(progress=True)
    texts, answers = training_texts(manifest)
    reference = Sample(texts, _training_embeddings(run, manifest, texts, embed), answers=answers)
    cur_texts = [input_text(r["messages"]) for r in records]
    current = Sample(cur_texts, embed(cur_texts), answers=[r.get("answer") for r in records],
                     feedback=[r.get("feedback") for r in records], ids=[str(r["id"]) for r in records])
    report = compare(reference, current, labels=train_labels(manifest), seed=seed)
    report.fixes = fixes(run, report, since)
    if write:
        _write(run, report, since)
    return report


def fixes(run: RunFolder, report: DriftReport, since: str | None) -> list[str]:
    if report.verdict == "no drift":
        return []
    ids = ", ".join(e["id"] for e in report.most_drifted[:5])
    window = f" --since {since}" if since else ""
    return [f"label the inputs that drifted most first (ids {ids}; all of them: `tailored drift {run.path}{window} "
            f"--to-label to_label.jsonl`), or mark served answers good/bad (POST /v1/traffic/ID/feedback)",
            f"export the drifted, labelled traffic: `tailored drift {run.path}{window} --export new.jsonl --drifted-only`",
            f"retrain from this run, keeping some old data: `tailored train --from {run.path} --data new.jsonl --mix-old 0.2`",
            "then check the old task was kept: `tailored eval NEW_RUN --data OLD_TEST.jsonl` (compares with the parent)"]


def _write(run: RunFolder, report: DriftReport, since: str | None) -> None:
    folder = run.path / "drift"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    body = {"run": run.name, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "since": since, **report.as_dict()}
    write_json(folder / f"report-{stamp}.json", body, indent=1)
    summary = {"checked_at": body["checked_at"], "since": since, "verdict": report.verdict,
               "n_traffic": report.n_current, "report": f"report-{stamp}.json",
               **{c.name: (c.test or {}).get("value") for c in report.checks}}
    history = folder / "history.jsonl"
    old = history.read_text(encoding="utf-8") if history.is_file() else ""
    atomic_write(history, old + json.dumps(summary) + "\n")


def history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every drift check of the run, oldest first (one line of ``drift/history.jsonl`` each)."""
    path = RunFolder(run_dir).path / "drift" / "history.jsonl"
    return [obj for _, obj, problem in iter_json(path) if problem is None] if path.is_file() else []


def render(report: DriftReport) -> str:
    marks = {"ok": "ok     ", "drift": "DRIFT  ", "severe": "SEVERE ", "skipped": "skipped"}
    lines = [f"drift: {report.verdict.upper()} ({report.n_current} traffic inputs against {report.n_reference} training inputs)"]
    lines += [f"  [{marks[c.status]}] {c.name}: {c.summary}" for c in report.checks]
    fb = report.feedback
    lines.append(f"  feedback: {fb['rated']} answers rated, {fb['bad']} bad" + (f" ({100 * fb['bad_rate']:.0f}%)" if fb["rated"] else ""))
    if report.verdict != "no drift":
        if report.distinctive_words:
            lines.append("  words typical of the traffic: " + ", ".join(f"{w['word']} ({100 * w['traffic_share']:.0f}% vs "
                                                                    f"{100 * w['training_share']:.0f}%)" for w in report.distinctive_words[:8]))
        lines.append("  inputs farthest from the training data:")
        lines += [f"    #{e['id']} (distance {e['distance_to_training']:.2f}): {e['text'][:100]}" for e in report.most_drifted[:5]]
        lines += [f"  fix: {f}" for f in report.fixes]
    return "\n".join(lines)


def to_label(report: DriftReport, records: list[dict[str, Any]], path: str | Path, limit: int = 100) -> int:
    """Write the drifted inputs (farthest first) as chat lines, the model's answer as a draft to correct."""
    from tailored.data.readers import write_jsonl

    by_id = {str(r["id"]): r for r in records}
    rows = []
    for e in report.most_drifted[:limit]:
        r = by_id.get(e["id"])
        if r is not None:
            rows.append({"id": e["id"], "messages": [*r["messages"], {"role": "assistant", "content": r.get("answer") or ""}]})
    write_jsonl(path, rows)
    return len(rows)


def export_labelled(records: list[dict[str, Any]], path: str | Path) -> tuple[int, int]:
    """Traffic with a known right answer, as chat training data: a correction, or an answer marked good.

    Returns (written, left out: unrated or bad without a correction).
    """
    from tailored.data.readers import write_jsonl

    rows = []
    for r in records:
        answer = r.get("correction") or (r.get("answer") if r.get("feedback") == "good" else None)
        if answer:
            rows.append({"messages": [*r["messages"], {"role": "assistant", "content": answer}]})
    if not rows:
        raise DataError("no labelled traffic to export: no answer is marked good or has a correction",
                        hint="mark answers through POST /v1/traffic/ID/feedback {\"rating\": \"good\"} or "
                             "{\"rating\": \"bad\", \"correction\": \"...\"}")
    write_jsonl(path, rows)
    return len(rows), len(records) - len(rows)
