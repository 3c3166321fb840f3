"""``data split``: stratified train/validation/test splits, with a label table and a leakage check.

Stratification: when the assistant answers form a small label set (classification-like data), by
label; otherwise by length quartile, so every split sees short and long examples alike. Counts are
*exact*: each split gets ``round(share × n)`` examples overall, and every stratum gets the floor or the
ceiling of its ideal share (largest-remainder rounding, ties broken by the seed).

A split that would leave a label with no training example is refused. Leakage (the same or a
near-duplicate example in two splits) is measured and reported, line by line.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.config.files import atomic_open
from tailored.data.clean import dedupe_text
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES, iter_lines
from tailored.data.near_dup import DEFAULT_THRESHOLD, cross_duplicates
from tailored.data.readers import read_records
from tailored.data.records import Example
from tailored.data.text_quality import normalize
from tailored.errors import DataError

SPLITS = ("train", "validation", "test")


def label_of(ex: Example) -> str:
    """The answer as a label: whitespace-collapsed, case kept (``card_arrival``)."""
    return " ".join(ex.assistant_text().split())


def looks_like_labels(examples: list[Example], max_labels: int | None = None) -> bool:
    """True when the answers form a small label set: few distinct short answers, each repeated."""
    labels = Counter(label_of(ex) for ex in examples)
    limit = max_labels if max_labels is not None else min(500, max(2, len(examples) // 2))  # ≥ 2 examples per label on average
    short = all(len(label.split()) <= 6 for label in labels)
    return 1 < len(labels) <= limit and short


def _count(share: float, n: int, name: str) -> int:
    if share < 0:
        raise DataError(f"--{name} {share}: must be ≥ 0", hint="a share like 0.1 or a count like 50")
    return int(round(share * n)) if share < 1 else int(share)


def _allocate(strata: dict[str, list[int]], total: int, rng: random.Random) -> dict[str, int]:
    """Largest-remainder rounding of ``total`` over strata in proportion to their sizes."""
    n = sum(len(v) for v in strata.values())
    ideal = {k: len(v) * total / n for k, v in strata.items()}
    out = {k: int(x) for k, x in ideal.items()}
    order = sorted(strata, key=lambda k: (-(ideal[k] - out[k]), rng.random()))
    for k in order[: total - sum(out.values())]:
        out[k] += 1
    return out


@dataclass
class SplitReport:
    input: str
    output_dir: str
    stratified_by: str
    sizes: dict[str, int]
    distribution: dict[str, dict[str, int]]  # stratum -> split -> count
    leakage: list[dict[str, Any]] = field(default_factory=list)
    skipped_invalid: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("input", "output_dir", "stratified_by", "sizes", "distribution", "leakage",
                                               "skipped_invalid", "files")}

    def render(self, limit: int = 20) -> str:
        out = [f"{self.input} → {self.output_dir}: " + ", ".join(f"{s} {n}" for s, n in self.sizes.items())
               + f" (stratified by {self.stratified_by})"]
        if self.skipped_invalid:
            out.append(f"skipped {self.skipped_invalid} invalid line(s): run `tailored data check` / `data clean` first")
        names = [s for s in SPLITS if self.sizes.get(s)]
        out.append(f"  {'label' if self.stratified_by == 'label' else 'stratum':32}" + "".join(f"{s:>12}" for s in names))
        for i, (stratum, counts) in enumerate(sorted(self.distribution.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))):
            if i == limit:
                out.append(f"  ... and {len(self.distribution) - limit} more (see --json)")
                break
            out.append(f"  {stratum[:32]:32}" + "".join(f"{counts.get(s, 0):>12}" for s in names))
        if self.leakage:
            kinds = Counter(f"{x['kind']} {x['split']}↔{x['with']}" for x in self.leakage)
            out.append("LEAKAGE: " + "; ".join(f"{n} {k}" for k, n in kinds.items()))
            for x in self.leakage[:10]:
                out.append(f"  {x['split']} line {x['line']} ≈ {x['with']} line {x['with_line']} ({x['kind']}, {x['similarity']})")
            out.append("  hint: run `tailored data clean` before splitting to remove duplicates")
        else:
            out.append("no leakage: no example (or near-duplicate) appears in two splits")
        return "\n".join(out)


def find_leakage(splits: dict[str, list[Example]], threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """Exact and near-duplicate pairs across splits, e.g. a validation line that is also in train.

    Args:
        splits: split name → examples (each keeps its source ``line``); compared in ``SPLITS`` order.
        threshold: Jaccard similarity (character 5-grams) from which a pair counts as near-duplicate.
    """
    names = [s for s in splits if splits[s]]
    found = []
    for i, ref in enumerate(names):
        for other in names[i + 1 :]:
            a, b = splits[ref], splits[other]
            keys = {ex.key(): ex.line for ex in a}
            for j, k, sim in cross_duplicates([dedupe_text(x) for x in a], [dedupe_text(x) for x in b], threshold):
                exact = b[j].key() in keys or normalize(dedupe_text(b[j])) == normalize(dedupe_text(a[k]))
                found.append({"split": other, "line": b[j].line, "with": ref, "with_line": a[k].line,
                              "kind": "exact" if exact else "near", "similarity": sim})
    return found


def split_examples(
    examples: list[Example], *, validation: float = 0.1, test: float = 0.1, seed: int = 0, stratify: str = "auto",
    max_labels: int | None = None,
) -> tuple[dict[str, list[Example]], str]:
    """Split examples; returns split name → examples (in file order) and what was stratified on."""
    n = len(examples)
    n_val, n_test = _count(validation, n, "validation"), _count(test, n, "test")
    if n_val + n_test >= n:
        raise DataError(f"validation {n_val} + test {n_test} leaves no training example out of {n}", hint="use smaller shares")
    if stratify == "auto":
        stratify = "label" if looks_like_labels(examples, max_labels) else "length"
    if stratify == "label":
        key = label_of
    elif stratify == "length":
        lengths = sorted(len(dedupe_text(ex)) for ex in examples)
        cuts = [lengths[int(q * (n - 1))] for q in (0.25, 0.5, 0.75)]

        def key(ex: Example) -> str:
            size = len(dedupe_text(ex))
            q = sum(size > c for c in cuts)
            return f"length q{q + 1} ({'≤' + str(cuts[q]) if q < 3 else '>' + str(cuts[2])} chars)"
    else:
        def key(ex: Example) -> str:
            return "all"
    rng = random.Random(seed)
    strata: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        strata[key(ex)].append(i)
    for idx in strata.values():
        rng.shuffle(idx)
    val_n = _allocate(strata, n_val, rng)
    test_n = _allocate(strata, n_test, rng)  # from the full stratum sizes too, so both splits are exact
    # A label whose every example went to validation/test could never be learned: refuse.
    starved = [k for k in strata if val_n[k] + test_n[k] >= len(strata[k])] if stratify == "label" else []
    if starved:
        raise DataError(
            f"this split would leave {len(starved)} label(s) with no training example: {', '.join(starved[:10])}",
            hint="lower --validation/--test, add examples for those labels, or drop them",
        )
    where: dict[int, str] = {}
    for k, idx in strata.items():
        for pos, i in enumerate(idx):
            where[i] = "validation" if pos < val_n[k] else "test" if pos < val_n[k] + test_n[k] else "train"
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for i, ex in enumerate(examples):
        out[where[i]].append(ex)
    return out, stratify


def split_file(
    path: str | Path, output_dir: str | Path, *, validation: float = 0.1, test: float = 0.1, seed: int = 0,
    stratify: str = "auto", max_labels: int | None = None, format: str = "auto", leakage_threshold: float = DEFAULT_THRESHOLD,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> SplitReport:
    """Split ``path`` into ``output_dir/{train,validation,test}.jsonl`` (lines copied unchanged).

    Args:
        path: input JSONL in any supported format.
        output_dir: folder for the split files (a split of size 0 gets no file).
        validation: share (below 1) or count (1 or more) of validation examples.
        test: share or count of test examples.
        seed: shuffling seed; the same seed gives the same split.
        stratify: ``auto`` (labels when the answers look like labels, else length), ``label``, ``length``, ``none``.
        max_labels: most distinct answers for ``auto`` to treat them as labels.
        format: force the input format.
        leakage_threshold: Jaccard similarity from which cross-split pairs are reported as near-duplicates.
        max_line_bytes: longest line read; a longer one is skipped as invalid.
    """
    read = read_records(path, format=format, max_line_bytes=max_line_bytes)
    if not read.examples:
        raise DataError(f"{path}: no valid examples to split", hint="run `tailored data check` on it")
    splits, by = split_examples(read.examples, validation=validation, test=test, seed=seed, stratify=stratify,
                                max_labels=max_labels)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: out_dir / f"{name}.jsonl" for name, exs in splits.items() if exs}
    where = {ex.line: name for name, exs in splits.items() for ex in exs}
    with ExitStack() as stack:  # one streamed pass; each split keeps the file's order
        outs = {name: stack.enter_context(atomic_open(target)) for name, target in files.items()}
        for raw in iter_lines(path, max_line_bytes=max_line_bytes):
            if raw.number in where and raw.data is not None:
                outs[where[raw.number]].write(raw.data + b"\n")
    for name in splits:
        if name not in files:
            (out_dir / f"{name}.jsonl").unlink(missing_ok=True)
    dist: dict[str, dict[str, int]] = defaultdict(dict)
    if by == "label":
        for name, exs in splits.items():
            for label, c in Counter(label_of(ex) for ex in exs).items():
                dist[label][name] = c
    else:
        lengths = sorted(len(dedupe_text(ex)) for ex in read.examples)
        cuts = [lengths[int(q * (len(lengths) - 1))] for q in (0.25, 0.5, 0.75)]
        for name, exs in splits.items():
            for q, c in Counter(sum(len(dedupe_text(ex)) > x for x in cuts) for ex in exs).items():
                dist[f"length q{q + 1}"][name] = c
    return SplitReport(str(path), str(out_dir), by, {s: len(v) for s, v in splits.items()}, dict(dist),
                       find_leakage(splits, leakage_threshold), skipped_invalid=len({p.line for p in read.problems if p.line}),
                       files={name: str(target) for name, target in files.items()})
