"""``data stats``: what is in a dataset, as numbers and (with ``--html``) as pictures.

Counts, token lengths per role, label distribution (classification-like data), exact and near-duplicate
clusters, language and charset, and diversity (distinct-1/2 of the assistant turns: the share of unique
unigrams/bigrams; low values mean repetitive answers).
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.data.check import exact_duplicate_groups, percentile
from tailored.data.clean import dedupe_text
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES
from tailored.data.near_dup import clusters
from tailored.data.readers import read_records
from tailored.data.split import label_of, looks_like_labels
from tailored.data.text_quality import charset_summary, distinct_n, guess_language


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"n": len(values), "min": ordered[0], "median": int(statistics.median(ordered)), "p95": percentile(ordered, 0.95),
            "max": ordered[-1], "total": sum(ordered)}


@dataclass
class DataStats:
    path: str
    format: str
    n_lines: int
    n_examples: int
    n_invalid: int
    unit: str  # "tokens" or "words"
    lengths: dict[str, list[int]] = field(default_factory=dict)  # role (and "example") -> lengths
    turns: list[int] = field(default_factory=list)
    labels: dict[str, int] | None = None
    exact_duplicates: list[list[int]] = field(default_factory=list)
    near_duplicates: list[list[int]] = field(default_factory=list)
    languages: dict[str, int] = field(default_factory=dict)
    charset: dict[str, float] = field(default_factory=dict)
    diversity: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "lines": self.n_lines, "examples": self.n_examples,
            "invalid_lines": self.n_invalid, "length_unit": self.unit,
            "lengths": {role: _summary(v) for role, v in self.lengths.items()},
            "turns_per_example": _summary(self.turns), "labels": self.labels,
            "exact_duplicate_clusters": self.exact_duplicates, "near_duplicate_clusters": self.near_duplicates,
            "languages": self.languages, "charset": self.charset, "diversity": self.diversity,
        }

    def render(self) -> str:
        out = [f"{self.path}: {self.n_examples} examples ({self.format}), {self.n_invalid} invalid line(s)"]
        out.append(f"{self.unit} per {'role':10} {'n':>6} {'min':>6} {'median':>7} {'p95':>6} {'max':>6} {'total':>9}")
        for role, values in self.lengths.items():
            s = _summary(values)
            if s:
                out.append(f"{'':{len(self.unit) + 5}}{role:10} {s['n']:6d} {s['min']:6d} {s['median']:7d} {s['p95']:6d} {s['max']:6d} {s['total']:9d}")
        if self.labels:
            counts = sorted(self.labels.values())
            out.append(f"labels: {len(self.labels)} (examples per label: min {counts[0]}, max {counts[-1]}); top: "
                       + ", ".join(f"{k} {v}" for k, v in Counter(self.labels).most_common(5)))
        out.append(f"duplicates: {len(self.exact_duplicates)} exact cluster(s) "
                   f"({sum(len(c) - 1 for c in self.exact_duplicates)} extra copies), "
                   f"{len(self.near_duplicates)} near-duplicate cluster(s)"
                   + (f", e.g. lines {self.near_duplicates[0]}" if self.near_duplicates else ""))
        out.append("languages: " + ", ".join(f"{k} {v}" for k, v in self.languages.items()))
        shown = {k: v for k, v in self.charset.items() if v >= 0.001}
        rest = 1 - sum(shown.values())
        out.append("charset (letters): " + ", ".join(f"{k} {v:.1%}" for k, v in shown.items())
                   + (f", other scripts {rest:.2%}" if len(shown) < len(self.charset) else ""))
        out.append("diversity of answers: " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.diversity.items()))
        return "\n".join(out)


def compute_stats(path: str | Path, *, tokenizer: Any = None, format: str = "auto", near_threshold: float = 0.8,
                  max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> DataStats:
    """Describe a dataset.

    Args:
        path: JSONL in any supported format.
        tokenizer: counts tokens per turn and per example (chat template included); None counts words.
        format: force the input format.
        near_threshold: Jaccard similarity from which examples count as near-duplicates.
        max_line_bytes: longest line read; a longer one counts as invalid.
    """
    read = read_records(path, format=format, max_line_bytes=max_line_bytes)
    exs = read.examples
    unit = "tokens" if tokenizer is not None else "words"

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text.split())

    lengths: dict[str, list[int]] = defaultdict(list)
    for ex in exs:
        if ex.text is not None:
            lengths["text"].append(count(ex.text))
        for m in ex.messages:
            lengths[m["role"]].append(count(str(m.get("content") or "")))
    if tokenizer is not None and exs:
        from tailored.data.tokenize import encode_example

        lengths["example"] = [len(encode_example(tokenizer, ex)) for ex in exs]
    else:
        lengths["example"] = [count(dedupe_text(ex)) for ex in exs]
    texts = [dedupe_text(ex) for ex in exs]
    near = [[exs[i].line for i in group] for group in clusters(texts, near_threshold)] if exs else []
    answers = [ex.assistant_text() for ex in exs]
    return DataStats(
        str(path), read.format, read.n_lines, len(exs), len({p.line for p in read.problems if p.line}), unit,
        lengths=dict(lengths), turns=[len(ex.messages) for ex in exs if ex.text is None],
        labels=dict(Counter(label_of(ex) for ex in exs).most_common()) if exs and looks_like_labels(exs) else None,
        exact_duplicates=exact_duplicate_groups(exs), near_duplicates=near,
        languages=dict(Counter(guess_language(ex.assistant_text() + " " + dedupe_text(ex)) for ex in exs).most_common()),
        charset=charset_summary(texts),
        diversity={"distinct_1": distinct_n(answers, 1), "distinct_2": distinct_n(answers, 2)},
    )


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plots(stats: DataStats) -> dict[str, str]:
    """The report's figures as ``data:`` URIs (PNG), keyed by title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    roles = [r for r, v in stats.lengths.items() if v]
    fig, axes = plt.subplots(1, len(roles), figsize=(3.2 * len(roles), 2.8), squeeze=False)
    for ax, role in zip(axes[0], roles):
        ax.hist(stats.lengths[role], bins=30, color="#4c72b0")
        ax.set_title(f"{role} ({len(stats.lengths[role])})")
        ax.set_xlabel(stats.unit)
    axes[0][0].set_ylabel("examples")
    figs[f"Length in {stats.unit} per role"] = _png(fig)
    plt.close(fig)
    if stats.labels:
        items = Counter(stats.labels).most_common()
        fig, ax = plt.subplots(figsize=(10, max(2.5, 0.16 * len(items))))
        ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#55a868")
        ax.tick_params(axis="y", labelsize=6)
        ax.set_xlabel("examples")
        figs[f"Label distribution ({len(items)} labels)"] = _png(fig)
        plt.close(fig)
    if stats.charset or stats.languages:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 2.6))
        a1.bar(list(stats.languages), list(stats.languages.values()), color="#8172b2")
        a1.set_title("language (heuristic)")
        a2.bar(list(stats.charset), [100 * v for v in stats.charset.values()], color="#c44e52")
        a2.set_title("letters by script (%)")
        for ax in (a1, a2):
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        figs["Language and charset"] = _png(fig)
        plt.close(fig)
    return figs


def write_html(stats: DataStats, path: str | Path) -> Path:
    """A self-contained HTML report (figures inlined as base64 PNG; no external files or scripts)."""
    d = stats.to_dict()
    rows = "".join(
        f"<tr><td>{html.escape(role)}</td>" + "".join(f"<td>{s.get(k, '')}</td>" for k in ("n", "min", "median", "p95", "max", "total")) + "</tr>"
        for role, s in d["lengths"].items() if s
    )
    figures = "".join(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='{uri}'>" for title, uri in plots(stats).items())
    dup = "".join(f"<li>lines {', '.join(map(str, c[:12]))}{' …' if len(c) > 12 else ''}</li>"
                  for c in (stats.exact_duplicates + stats.near_duplicates)[:30])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tailored data stats: {html.escape(Path(stats.path).name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(stats.path)}</h1>
<p>{stats.n_examples} examples · format {stats.format} · {stats.n_invalid} invalid line(s) ·
distinct-1 {_fmt(stats.diversity.get('distinct_1'))} · distinct-2 {_fmt(stats.diversity.get('distinct_2'))} (share of unique words / word pairs in the answers)</p>
<h2>Length ({stats.unit})</h2><table><tr><th>role</th><th>n</th><th>min</th><th>median</th><th>p95</th><th>max</th><th>total</th></tr>{rows}</table>
{figures}
<h2>Duplicates</h2><p>{len(stats.exact_duplicates)} exact cluster(s), {len(stats.near_duplicates)} near-duplicate cluster(s)</p><ul>{dup}</ul>
</body></html>"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
