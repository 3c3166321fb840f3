"""One self-contained HTML page for a run or an evaluation: loss curves, metrics, answers, red flags.

The page has no external resources (plots are inline PNG), so it can be mailed or archived as is.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

from tailored.config.manifest import Manifest, RunFolder, RunMetrics
from tailored.eval.redflags import Flag, overfitting, read_curves, render, worst

TEMPLATE = Path(__file__).parent / "templates" / "report.html"
TITLES = {"overfitting": "Overfitting", "forgetting": "Catastrophic forgetting", "mode_collapse": "Mode collapse"}
VERDICT_TEXT = {"ok": "No red flag: every check ran and found no problem.",
                "warning": "Warning: look at the flagged checks below before you ship this model.",
                "red": "Red flag: this run has a problem; each flag below says what to change.",
                "incomplete": "Incomplete: not every check ran, so this is no all-clear (each skipped one says what "
                              "completes it).",
                "skipped": "No red-flag check could run here (each one below says what it needs)."}
# (key, label, higher is better, format)
METRIC_ROWS = [
    ("accuracy", "accuracy", True, "pct"), ("macro_f1", "macro F1", True, "f3"), ("weighted_f1", "weighted F1", True, "f3"),
    ("macro_precision", "macro precision", True, "f3"), ("macro_recall", "macro recall", True, "f3"),
    ("outside_label_set", "answers outside the label set", False, "pct"),
    ("accuracy_nearest_label", "accuracy, outside answers → nearest label", True, "pct"),
    ("accuracy_constrained", "accuracy, decoding held to the labels", True, "pct"),
    ("macro_f1_constrained", "macro F1, decoding held to the labels", True, "f3"),
    ("accuracy_ranked", "accuracy, the most probable label", True, "pct"),
    ("macro_f1_ranked", "macro F1, the most probable label", True, "f3"),
    ("valid_json_rate", "answers that parse as JSON (held to the schema)", True, "pct"),
    ("execution_accuracy", "execution accuracy", True, "pct"), ("valid_sql_rate", "valid SQL", True, "pct"),
    ("exact_match", "exact match", True, "pct"), ("bleu", "BLEU", True, "f1"), ("chrf", "chrF", True, "f1"),
    ("rouge1", "ROUGE-1", True, "f3"), ("rouge2", "ROUGE-2", True, "f3"), ("rougeL", "ROUGE-L", True, "f3"),
    ("length_ratio", "length ratio (answer / reference)", None, "f2"), ("reference_loss", "reference loss", False, "f3"),
    ("perplexity", "perplexity", False, "f1"), ("accuracy_norm", "accuracy (length-normalised)", True, "pct"),
]


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "–"
    return {"pct": f"{v:.1%}", "f3": f"{v:.3f}", "f2": f"{v:.2f}", "f1": f"{v:.1f}"}[kind]


def curves_png(run_dir: str | Path) -> str | None:
    """Train and validation loss against step as a base64 PNG (None without a curve)."""
    train, val = read_curves(run_dir)
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.8), dpi=110)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="#0969da", lw=1.2, alpha=0.85, label="train")
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], color="#cf222e", lw=2, marker="o", ms=4, label="validation")
        best = min(val, key=lambda r: r["loss"])
        ax.axvline(best["step"], color="#1a7f37", ls="--", lw=1)
        ax.annotate(f"best: step {best['step']}", (best["step"], best["loss"]), textcoords="offset points", xytext=(6, 10),
                    color="#1a7f37", fontsize=9)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _evidence(ev: dict[str, Any]) -> list[tuple[str, str]]:
    def show(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, dict):
            return ", ".join(f"{k} {show(x)}" for k, x in v.items() if not isinstance(x, (list, dict)) or k == "most_repeated")
        return str(v)

    return [(k, show(v)) for k, v in ev.items() if v is not None]


def _eval_block(report: dict[str, Any]) -> dict[str, Any]:
    models = report["models"]
    names = list(models)
    rows = []
    for key, label, higher, kind in METRIC_ROWS:
        vals = [models[n].get("metrics", {}).get(key) for n in names]
        if all(v is None for v in vals):
            continue
        row: dict[str, Any] = {"name": label, "values": [_fmt(v, kind) for v in vals], "delta": "", "delta_class": ""}
        if "base" in models and "tuned" in models and None not in (models["tuned"]["metrics"].get(key), models["base"]["metrics"].get(key)):
            d = models["tuned"]["metrics"][key] - models["base"]["metrics"][key]
            row["delta"] = ("+" if d >= 0 else "−") + _fmt(abs(d), kind)
            if higher is not None and abs(d) > 1e-9:
                row["delta_class"] = "better" if (d > 0) == higher else "worse"
        rows.append(row)
    probe_name, probe_vals = _probe_accuracies(models, names)
    if any(v is not None for v in probe_vals):
        row = {"name": f"{probe_name} (forgetting check)", "values": [_fmt(v, "pct") for v in probe_vals], "delta": "", "delta_class": ""}
        if len(names) == 2 and None not in probe_vals:
            d = probe_vals[0] - probe_vals[1]
            row["delta"], row["delta_class"] = ("+" if d >= 0 else "−") + _fmt(abs(d), "pct"), ("better" if d > 0 else "worse" if d < 0 else "")
        rows.append(row)
    tuned_m = models.get("tuned", {}).get("metrics", {})
    answer_models = [n for n in names if "answers" in models[n]]
    sbs = []
    for r in report.get("side_by_side", []):
        answers = []
        for n in answer_models:
            text = r.get(n, "")
            good = text.strip().lower() == r["reference"].strip().lower()
            answers.append({"text": text, "cls": "match" if good else ("miss" if report["task"] == "classification" else "")})
        sbs.append({"prompt": r["prompt"][-600:], "reference": r["reference"], "answers": answers})
    worst_labels = sorted(tuned_m.get("per_label", []), key=lambda x: (x["f1"], -x["support"]))[:8]
    return {"data": Path(report["data"]["path"]).name, "task": report["task"], "examples": report["data"].get("examples") or tuned_m.get("n"),
            "models": [f"{_shown(n, models)} ({Path(models[n]['target']).name})" for n in names], "metrics": rows,
            "delta": "base" in models and "tuned" in models, "confused": tuned_m.get("most_confused", []),
            "worst_labels": worst_labels, "rows": sbs, "answer_models": [_shown(n, models) for n in answer_models]}


def _probe_accuracies(models: dict[str, Any], names: list[str]) -> tuple[str, list[float | None]]:
    """The probe score the forgetting flag judges (eval.redflags.forgetting): calibrated when every scored model has
    it, else the raw accuracy; with the row's name."""
    probes = [models[n].get("probe") or {} for n in names]
    calibrated = all("accuracy_calibrated" in p for p in probes if p)
    key = "accuracy_calibrated" if calibrated else "accuracy"
    return ("general probe accuracy, calibrated" if calibrated else "general probe accuracy"), [p.get(key) for p in probes]


def _shown(name: str, models: dict[str, Any]) -> str:
    """Column name: "tuned"/"base" in a comparison, "model" for a single model."""
    return name if "base" in models else "model"


def _samples(report: dict[str, Any]) -> dict[str, Any] | None:
    from tailored.eval.redflags import VARIED_PROMPTS

    models = {n: m["diversity"]["answers"] for n, m in report["models"].items() if m.get("diversity", {}).get("answers")}
    if not models:
        return None
    rows = [{"prompt": p, "answers": [models[n][i] for n in models]} for i, p in enumerate(VARIED_PROMPTS)][:10]
    return {"models": list(models), "rows": rows}


def _run_blocks(manifest: Manifest) -> list[list[tuple[str, str]]]:
    hp, m, data = manifest.hyperparameters, manifest.metrics or RunMetrics(), manifest.data
    return [
        [("base model", manifest.base_model.name), ("method", manifest.method.name),
         ("trainable", f"{manifest.parameters.trainable:,} of {manifest.parameters.total:,}"),
         ("status", manifest.status)],
        [("train data", f"{Path(data.train.path).name} ({data.train.used} examples)"),
         ("validation", f"{Path(data.validation.path).name} ({data.validation.used} examples)" if data.validation else "none"),
         ("epochs · batch", f"{hp.get('epochs')} · {hp.get('batch_size')}"),
         ("learning rate", f"{hp.get('learning_rate', 0):.2e} (×{hp.get('learning_rate_multiplier')})")],
        [("steps", str(m.steps)), ("train loss", _fmt(m.train_loss, "f3")),
         ("validation loss", _fmt(m.validation_loss, "f3")),
         ("best", f"step {m.best_step} ({_fmt(m.best_validation_loss, 'f3')})" if m.best_step else "–")],
    ]


def saved_evals(run_dir: str | Path) -> list[dict[str, Any]]:
    """Evaluation reports saved in a run folder by ``tailored eval`` (``evals/*.json``), oldest first."""
    folder = RunFolder(run_dir).evals
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return [json.loads(p.read_text()) for p in files]


def render_html(*, run_dir: str | Path | None = None, evals: list[dict[str, Any]] | None = None) -> str:
    """The report page for a run folder and/or evaluation reports (from :func:`tailored.eval.run.evaluate`)."""
    import jinja2

    from tailored import __version__

    evals = evals if evals is not None else (saved_evals(run_dir) if run_dir else [])
    run = RunFolder(run_dir) if run_dir else None
    manifest = run.read() if run and run.exists() else None
    flags: dict[str, dict[str, Any]] = {}
    if run and manifest:
        flags["overfitting"] = overfitting(run.path).as_dict()
        stored = run.red_flags
        if stored.is_file():
            for f in json.loads(stored.read_text())["flags"]:
                flags.setdefault(f["name"], f)
    for ev in evals:  # an evaluation's model-based checks replace the cheaper after-training ones
        for f in ev.get("red_flags", []):
            if f["verdict"] != "skipped" or f["name"] not in flags:
                flags[f["name"]] = f
    flag_list = [dict(f, title=TITLES.get(f["name"], f["name"]), evidence=_evidence(f.get("evidence") or {})) for f in flags.values()]
    verdict = worst([Flag(**{k: f[k] for k in ("name", "verdict", "summary")}) for f in flags.values()]) if flags else "skipped"
    if flags and all(f["verdict"] == "skipped" for f in flags.values()):
        verdict = "skipped"
    title = Path(run_dir).name if manifest else (Path(evals[0]["target"]).name if evals else "tailored")
    subtitle = (f"fine-tune of {manifest.base_model.name} with {manifest.method.name}" if manifest
                else "evaluation report")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE.read_text()).render(
        title=title, subtitle=subtitle, verdict=verdict, verdict_text=VERDICT_TEXT[verdict],
        run=_run_blocks(manifest) if manifest else None, flags=flag_list,
        curves=curves_png(run_dir) if manifest else None, evals=[_eval_block(e) for e in evals],
        samples=next((s for s in (_samples(e) for e in evals) if s), None), version=__version__,
        created=time.strftime("%Y-%m-%d %H:%M"),
    )


def write_html(path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`render_html` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(**kwargs), encoding="utf-8")
    return path


def render_text(report: dict[str, Any]) -> str:
    """Metrics table, a few side-by-side answers and the red flags, as terminal text."""
    models = report["models"]
    names = list(models)
    lines = [f"{report['task']} · {Path(report['data']['path']).name} · {report['data'].get('examples') or ''} examples"]
    if report.get("weights"):
        lines.append(f"weights: {report['weights']}")
    lines += [f"prompts of {n}: {m['prompts']}" for n, m in models.items() if m.get("prompts")]
    shown = {n: n if "base" in models else "model" for n in names}
    lines.append(f"  {'metric':36s}" + "".join(f"{shown[n]:>12s}" for n in names))
    for key, label, _higher, kind in METRIC_ROWS:
        vals = [models[n].get("metrics", {}).get(key) for n in names]
        if any(v is not None for v in vals):
            lines.append(f"  {label:36s}" + "".join(f"{_fmt(v, kind):>12s}" for v in vals))
    probe_name, probe = _probe_accuracies(models, names)
    if any(v is not None for v in probe):
        lines.append(f"  {probe_name:36s}" + "".join(f"{_fmt(v, 'pct'):>12s}" for v in probe))
    for row in report.get("side_by_side", [])[:3]:
        lines.append(f"\n  prompt:    {row['prompt'][-160:]!r}\n  reference: {row['reference'][:160]!r}")
        for n in names:
            if n in row:
                lines.append(f"  {shown[n] + ':':10s} {row[n][:160]!r}")
    more = f" ({report['to_complete']})" if report.get("to_complete") else ""
    lines.append(f"\nred flags: {report['verdict']}{more}\n" + render(report["red_flags"]))
    return "\n".join(lines)
