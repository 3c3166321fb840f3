"""What the data and jobs pages show, computed by the library: check report, statistics, masks, estimate, curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailored.config.manifest import RunFolder
from tailored.errors import ConfigError, RequestError, TailoredError

MAX_PREVIEW_CHARS = 4000


def inspect(path: Path, row: Any, tokenizer: Any, n_preview: int) -> dict[str, Any]:
    """A stored upload: its check report (as the service recorded it), statistics, and a preview of what trains."""
    from tailored.data.readers import read_records
    from tailored.data.stats import compute_stats

    report = json.loads(row["report"] or "{}")
    out: dict[str, Any] = {"id": row["id"], "filename": row["filename"], "status": row["status"],
                           "status_details": row["status_details"], "report": report, "stats": None, "preview": []}
    try:
        stats = compute_stats(path, tokenizer=tokenizer)
        out["stats"] = {**stats.to_dict(), "histograms": {role: v for role, v in stats.lengths.items() if v}}
        examples = read_records(path).examples[:n_preview]
    except (TailoredError, UnicodeDecodeError, OSError) as exc:  # unreadable: the report says why
        out["stats_error"] = exc.message if isinstance(exc, TailoredError) else str(exc)
        return out
    out["preview"] = [preview(tokenizer, ex) for ex in examples]
    return out


def preview(tokenizer: Any, example: Any) -> dict[str, Any]:
    """The rendered training text cut into runs of trained / not-trained tokens, from the labels training uses."""
    from tailored.data.tokenize import IGNORE, assistant_spans, encode_example

    if getattr(example, "chosen", None) is not None or not (example.messages or example.text):
        return {"line": example.line, "segments": [], "note": "preference pair: both answers are scored, the prompt is not"}
    try:
        encoded = encode_example(tokenizer, example)
        text = example.text if example.text is not None else assistant_spans(tokenizer, example)[0]
    except TailoredError as exc:
        return {"line": example.line, "segments": [], "note": exc.message}
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if example.text is not None:  # a text example: every token of it trains
        trained = [True] * len(offsets)
    else:
        trained = [label != IGNORE for label in encoded.labels[:len(offsets)]]
    segments: list[list[Any]] = []
    pos = 0
    for (start, end), on in zip(offsets, trained):
        if end <= start:
            continue
        piece = text[pos:end]
        pos = end
        if segments and segments[-1][1] == on:
            segments[-1][0] += piece
        else:
            segments.append([piece, on])
    if pos < len(text):
        segments.append([text[pos:], False])
    n_trained = sum(1 for x in encoded.labels if x != IGNORE)
    shown, total = [], 0
    for piece, on in segments:
        if total >= MAX_PREVIEW_CHARS:
            shown.append(["…", False])
            break
        shown.append([piece[:MAX_PREVIEW_CHARS - total], on])
        total += len(piece)
    return {"line": example.line, "tokens": len(encoded.labels), "trained_tokens": n_trained,
            "segments": [{"text": t, "trained": on} for t, on in shown]}


def estimate_for(jobs: Any, data: Path, body: dict[str, Any]) -> dict[str, Any]:
    """The estimate for a job form's settings (the same names the job takes), measured here by matmul timing."""
    from tailored.estimate.report import estimate

    tailored = dict(body.get("tailored") or {})
    settings: dict[str, Any] = {"model": jobs.base.spec, "data": str(data), **tailored}
    for ours, theirs in (("epochs", "n_epochs"), ("batch_size", "batch_size")):
        if body.get(theirs) not in (None, "", "auto"):
            settings[ours] = int(body[theirs])
    try:
        result = estimate(calibrate="matmul", **settings)
    except ConfigError as exc:
        raise RequestError("; ".join(exc.problems) if getattr(exc, "problems", None) else exc.message,
                           code="invalid_value") from None
    shown = result.to_dict()
    shown["settings"].pop("data", None)  # the server's own path of the upload: not the caller's business
    return {"estimate": shown, "text": result.render().replace(str(data), body.get("training_file") or "the training file")}


def curve(run_dir: Path, checkpoints: list[dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    """Every point of a run's metrics (nothing thinned), validation, checkpoints with the best marked, ETA, red flags."""
    from tailored.data.jsonl import read_json_rows

    run = RunFolder(run_dir)
    rows = [r for r in read_json_rows(run.metrics) if isinstance(r, dict)] if run.metrics.is_file() else []
    train = [{"step": r["step"], "loss": r.get("loss"), "accuracy": r.get("token_accuracy"),
              "elapsed_s": r.get("elapsed_s")} for r in rows if r.get("split") == "train"]
    valid = [{"step": r["step"], "loss": r.get("loss"), "accuracy": r.get("token_accuracy")}
             for r in rows if r.get("split") != "train"]
    total = None
    if run.manifest_file.is_file():
        try:
            total = int(run.read().hyperparameters.get("total_steps") or 0) or None
        except (TailoredError, ValueError, TypeError):
            total = None
    eta = None
    last = train[-1] if train else None
    if last and total and last["step"] and last.get("elapsed_s") and job["status"] == "running":
        eta = max(0.0, float(last["elapsed_s"]) / last["step"] * (total - last["step"]))
    marks = [{"step": c["step_number"], "model": c["fine_tuned_model_checkpoint"],
              "valid_loss": (c.get("metrics") or {}).get("valid_loss"), "train_loss": (c.get("metrics") or {}).get("train_loss")}
             for c in checkpoints]
    scored = [m for m in marks if m["valid_loss"] is not None] or [m for m in marks if m["train_loss"] is not None]
    key = "valid_loss" if scored and scored[0]["valid_loss"] is not None else "train_loss"
    best = min(scored, key=lambda m: m[key])["step"] if scored else None
    flags = json.loads(run.red_flags.read_text()) if run.red_flags.is_file() else None
    return {"status": job["status"], "train": train, "validation": valid, "total_steps": total, "eta_s": eta,
            "checkpoints": marks, "best_step": best, "best_by": key if best is not None else None, "red_flags": flags}
