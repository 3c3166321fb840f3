"""``data check``: every line validated, problems grouped by category with line numbers, plus statistics.

Errors (exit 1): invalid lines, fewer than 10 examples. Warnings: fewer than 100 examples, examples
longer than the context, exact duplicates, and targets a model can only collapse on (one answer
dominating, one template, answers echoing the prompt: :mod:`tailored.data.targets`). With a tokenizer: token statistics per example, total
training tokens × epochs, and an estimated training time on this machine.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.config.auto import auto_epochs, auto_holdout_count, guarded_run
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES
from tailored.data.readers import read_records
from tailored.data.records import Example, Problem
from tailored.data.targets import target_problems

MIN_EXAMPLES = 10
RECOMMENDED_EXAMPLES = 100


@dataclass
class CheckReport:
    path: str
    format: str
    n_lines: int
    examples: list[Example]
    problems: list[Problem] = field(default_factory=list)
    token_stats: dict[str, Any] | None = None
    overlength: list[tuple[int, int]] = field(default_factory=list)
    duplicates: list[list[int]] = field(default_factory=list)
    encoded: list[Any] | None = None  # one Encoded per example when a tokenizer was given (reused by train)

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def by_category(self) -> dict[str, list[Problem]]:
        groups: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            groups[p.category].append(p)
        return dict(groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "lines": self.n_lines,
            "valid_examples": len(self.examples),
            "ok": not self.has_errors,
            "errors": sum(p.severity == "error" for p in self.problems),
            "warnings": sum(p.severity == "warning" for p in self.problems),
            "problems": {
                cat: [{"line": p.line, "message": p.message, "severity": p.severity,
                       **({"unit": p.unit, "column": p.column} if p.unit != "line" or p.column else {})} for p in ps]
                for cat, ps in self.by_category().items()
            },
            "token_stats": self.token_stats,
            "overlength": [{"line": line, "tokens": n} for line, n in self.overlength],
            "duplicates": self.duplicates,
        }

    def render(self, limit: int = 50) -> str:
        """Human-readable report (also embedded in the error `train` raises for invalid data)."""
        out = [f"{self.path}: {self.n_lines} lines, format {self.format}, {len(self.examples)} valid examples"]
        for cat, ps in sorted(self.by_category().items(), key=lambda kv: (kv[1][0].severity != "error", kv[0])):
            sev = ps[0].severity.upper()
            out.append(f"{sev} {cat} ({len(ps)}):")
            for p in ps[:limit]:
                out.append(f"  {p.where}: {p.message}" if p.line else f"  {p.message}")
            if len(ps) > limit:
                out.append(f"  ... and {len(ps) - limit} more")
        if self.token_stats:
            t = self.token_stats
            out.append(
                f"tokens per example: min {t['min']} · median {t['median']} · p95 {t['p95']} · max {t['max']}; "
                f"trained tokens per example: median {t['trained_median']}"
                + (f"; median {t['listed_median']} with the {t['neighbours']} labelled training requests each prompt lists "
                   "(neighbours), counted below" if t.get("neighbours") else "")
            )
            out.append(
                f"training tokens: {t['epoch_tokens']:,} per epoch × {t['epochs']} epochs = {t['epoch_tokens'] * t['epochs']:,}"
                + (f" (validation: auto holds out {t['held_out']} examples)" if t["held_out"]
                   else f" (validation: {t['validation']})" if t["validation"] != "auto" else "")
                + (f"; estimated time on this machine: ~{format_seconds(t['estimated_seconds'])} (rough; `tailored estimate` "
                   "measures this machine)" if t.get("estimated_seconds") else "")
            )
        out.append("OK" if not self.has_errors else "FAILED: fix the errors above (each names its line)")
        return "\n".join(out)


def format_seconds(s: float) -> str:
    """A duration for people: seconds, minutes or hours."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def percentile(values: list[int], q: float) -> int:
    """The nearest-rank ``q`` quantile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def exact_duplicate_groups(examples: list[Example]) -> list[list[int]]:
    """Line numbers of examples that are exactly the same conversation, one list per group of 2 or more."""
    seen: dict[str, list[int]] = defaultdict(list)
    for ex in examples:
        seen[ex.key()].append(ex.line)
    return [lines for lines in seen.values() if len(lines) > 1]


def check_file(
    path: str | Path,
    *,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    format: str = "auto",
    min_examples: int = MIN_EXAMPLES,
    epochs: int | None = None,
    tokens_per_second: float | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    validation: str = "auto",
    early_stopping_patience: int | str = "auto",
) -> CheckReport:
    """Validate ``path``; with a tokenizer, add token statistics and context-length checks.

    ``validation`` and ``early_stopping_patience`` are training's settings: what ``validation: auto`` holds out is
    not trained on, and ``auto`` epochs are longer when validation and early stopping guard the run
    (config.auto.guarded_run, auto_epochs)."""
    read = read_records(path, format=format, max_line_bytes=max_line_bytes)
    report = CheckReport(str(path), read.format, read.n_lines, read.examples, list(read.problems))
    n = len(read.examples)
    if read.n_lines and n < min_examples:
        report.problems.append(Problem(0, "too_few_examples", f"{n} valid examples; at least {min_examples} are needed"))
    elif read.n_lines and n < RECOMMENDED_EXAMPLES and min_examples >= MIN_EXAMPLES:
        report.problems.append(
            Problem(0, "few_examples", f"{n} examples; 100 or more usually work much better", severity="warning")
        )
    report.problems += target_problems(read.examples)
    report.duplicates = exact_duplicate_groups(read.examples)
    for lines in report.duplicates:
        report.problems.append(
            Problem(lines[1], "exact_duplicate", f"same as line {lines[0]}" + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""),
                    severity="warning")
        )
    if tokenizer is not None and read.examples:
        from tailored.data.tokenize import encode_example

        encoded = [encode_example(tokenizer, ex) for ex in read.examples]
        report.encoded = encoded
        lengths = [len(e) for e in encoded]
        trained = [e.n_labels for e in encoded]
        held = auto_holdout_count(n) if validation == "auto" else 0  # trained on the rest, guarded by what it holds out
        ep = epochs or auto_epochs(n - held, guarded=guarded_run(validation, n, early_stopping_patience))
        total = sum(lengths)
        per_epoch = round(total * (n - held) / n)  # what is trained on each epoch, the held-out share aside
        stats = {
            "min": min(lengths), "median": int(statistics.median(lengths)), "p95": percentile(lengths, 0.95),
            "max": max(lengths), "total": total, "trained_total": sum(trained),
            "trained_median": int(statistics.median(trained)), "epochs": ep, "held_out": held, "epoch_tokens": per_epoch,
            "validation": validation,
        }
        if tokens_per_second:
            stats["estimated_seconds"] = round(per_epoch * ep / tokens_per_second, 1)
        report.token_stats = stats
        if max_seq_length:
            for e in encoded:
                if len(e) > max_seq_length:
                    report.overlength.append((e.line, len(e)))
                    report.problems.append(Problem(
                        e.line, "longer_than_context",
                        f"{len(e)} tokens > max_seq_length {max_seq_length}: it will be skipped (overlength: drop) unless you "
                        "raise max_seq_length or set overlength: truncate", severity="warning"))
    return report
