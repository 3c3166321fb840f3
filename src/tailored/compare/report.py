"""A comparison as a terminal table and as one self-contained HTML page with a quality-vs-cost plot.

The page uses the stylesheet of ``tailored report`` (read from its template, not copied) and an inline
PNG plot, so it can be mailed or archived as is.
"""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path
from typing import Any

from tailored.eval.report import TEMPLATE as EVAL_TEMPLATE

TEMPLATE = Path(__file__).parent / "templates" / "compare.html"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


def _usd(v: float) -> str:
    return "$0" if v == 0 else (f"${v:.2f}" if v >= 0.01 else f"${v:.2g}")


def _flags(row: dict[str, Any]) -> str:
    if row.get("red_flags") is None:
        return "–"
    checked = [f"{f['name']} {f['verdict']}" for f in row["red_flags"] if f["verdict"] != "skipped"]
    return ", ".join(checked) if checked else ("not checked (run `tailored eval RUN`)" if row["red_flags"] else "none recorded")


def rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Each strategy's figures, formatted for display."""
    out = []
    for r in report["strategies"]:
        q, c, t = r["quality"], r["cost_per_1k"], r.get("training")
        out.append({"name": r["name"], "value": _pct(q["value"]), "ci": f"{_pct(q['ci_low'])}–{_pct(q['ci_high'])}",
                    "p50": f"{r['latency']['p50_s']:.2f} s", "p95": f"{r['latency']['p95_s']:.2f} s",
                    "prompt_tokens": f"{r['prompt_tokens']:.0f}", "here": _duration(c["here_seconds"]),
                    "gpu": _usd(c["gpu_usd"]), "training": f"{_duration(t['here_seconds'])} · {_usd(t['gpu_usd'])}" if t else "–",
                    "flags": _flags(r), "notes": "; ".join(r.get("notes", []))})
    return out


def render_text(report: dict[str, Any]) -> str:
    """The table, the notes and the verdict with its reasons."""
    cols = [("strategy", "name", "<"), (report["headline"], "value", ">"), ("95% interval", "ci", ">"), ("p50", "p50", ">"),
            ("p95", "p95", ">"), ("prompt tok", "prompt_tokens", ">"), ("here / 1k req", "here", ">"),
            (f"{report['pricing']['gpu']} $/1k (est.)", "gpu", ">"), ("training here · gpu", "training", ">"),
            ("red flags", "flags", "<")]
    table = rows(report)
    widths = [max(len(h), *(len(r[k]) for r in table)) for h, k, _ in cols]
    line = lambda cells: "  ".join(f"{c:{a}{w}}" for c, (_, _, a), w in zip(cells, cols, widths)).rstrip()  # noqa: E731
    p = report["pricing"]
    lines = [f"{report['task']} · {Path(report['test']['path']).name} · {report['test']['examples']} test examples · "
             f"base {Path(report['base_model']).name}", line([h for h, _, _ in cols]), line(["-" * w for w in widths])]
    lines += [line([r[k] for _, k, _ in cols]) for r in table]
    lines.append(f"\ncost: 'here' is the measured time on this machine (priced at ${p['cpu_usd_per_hour']}/h); {p['gpu']} is an "
                 f"estimate at {p['gpu_tflops']} TFLOPS × {p['utilisation']} utilisation, ${p['gpu_usd_per_hour']}/h (prices of {p['prices_date']})")
    for r in report["strategies"]:
        for n in r.get("notes", []):
            lines.append(f"note ({r['name']}): {n}")
        if r.get("index"):
            i = r["index"]
            lines.append(f"index ({r['name']}): {i['chunks']} chunks from {i['files']} files, {i['reused_files']} reused, "
                         f"{i['embedded_files']} embedded, {i['seconds']:.2f} s" + (f" ({i['path']})" if i.get("path") else ""))
    lines += [f"note: {n}" for n in report.get("notes", [])]
    v = report["verdict"]
    lines.append(f"\nverdict: {v['winner']}")
    lines += [f"  - {r}" for r in v["reasons"]]
    return "\n".join(lines)


def plot_png(report: dict[str, Any]) -> str:
    """Quality (with its interval) against the estimated GPU cost per 1,000 requests, as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    winner = report["verdict"]["winner"]
    for i, r in enumerate(report["strategies"]):
        x, q = r["cost_per_1k"]["gpu_usd"], r["quality"]
        colour = "#1a7f37" if r["name"] == winner else "#0969da"
        ax.errorbar([x], [100 * q["value"]], yerr=[[100 * (q["value"] - q["ci_low"])], [100 * (q["ci_high"] - q["value"])]],
                    fmt="o", ms=8, color=colour, capsize=4)
        ax.annotate(r["name"], (x, 100 * q["value"]), textcoords="offset points", xytext=(8, 6 if i % 2 else -14), fontsize=9,
                    color=colour)
    ax.set_xlabel(f"estimated cost per 1,000 requests on {report['pricing']['gpu']} (USD)")
    ax.set_ylabel(f"{report['headline']} (%), 95% interval")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _answers(report: dict[str, Any], n: int = 12) -> list[dict[str, Any]]:
    from tailored.eval.tasks import read_test_set

    test = read_test_set(report["test"]["path"], report["settings"].get("limit"))
    out = []
    for i in range(min(n, len(test.references))):
        users = [m for m in test.prompts[i] if m.get("role") == "user"]
        cells = []
        for r in report["strategies"]:
            good = r["quality"]["items"][i] >= 0.999
            src = ", ".join(f"{s['source']}#{s['chunk']}" for s in (r.get("sources") or [[]] * (i + 1))[i]) if r.get("sources") else ""
            cells.append({"text": r["answers"][i], "cls": "match" if good else "miss", "sources": src})
        out.append({"prompt": str(users[-1]["content"])[-400:] if users else "", "reference": test.references[i], "answers": cells})
    return out


def render_html(report: dict[str, Any]) -> str:
    import jinja2

    from tailored import __version__

    style = re.search(r"<style>.*?</style>", EVAL_TEMPLATE.read_text(), re.S)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE.read_text()).render(
        title=Path(report["test"]["path"]).name, task=report["task"], examples=report["test"]["examples"],
        base_model=Path(report["base_model"]).name, metric=report["headline"], version=__version__,
        created=time.strftime("%Y-%m-%d %H:%M"), verdict=report["verdict"], rows=rows(report), gpu=report["pricing"]["gpu"],
        plot=plot_png(report), notes=report.get("notes", []), answers=_answers(report), style=style.group(0) if style else "")


def write_html(path: str | Path, report: dict[str, Any]) -> Path:
    from tailored.config.files import atomic_write

    path = Path(path)
    atomic_write(path, render_html(report))
    return path
