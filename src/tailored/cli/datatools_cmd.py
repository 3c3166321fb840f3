"""``tailored data clean|split|convert|stats``: the data pre-flight (each is one library call)."""

from __future__ import annotations

import argparse
import json

from tailored.cli.common import group
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES, MAX_LINE_BYTES_HELP


def register(sub: argparse._SubParsersAction) -> None:
    data = group(sub, "data", "Check, clean, split, convert and describe datasets.")

    p = data.add_parser("clean", help="Remove duplicates, near-duplicates, empty/garbled/overlong examples; log every removal.")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="Cleaned JSONL (kept lines copied unchanged).")
    p.add_argument("--removed", default=None, help="Side file of removals [default: OUTPUT.removed.jsonl].")
    p.add_argument("--keep", action="append", default=[], metavar="REASON",
                   help="Flag but keep this class (repeatable): near_duplicate, exact_duplicate, too_long, ...")
    p.add_argument("--near-threshold", dest="near_threshold", type=float, default=0.8,
                   help="Jaccard similarity of character 5-grams from which examples are near-duplicates (1 disables).")
    p.add_argument("--model", default="none", help="Tokenizer for --max-seq-length (e.g. smollm2); 'none' skips the length check.")
    p.add_argument("--max-seq-length", dest="max_seq_length", type=int, default=None)
    p.add_argument("--format", default="auto")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    p.add_argument("--max-line-bytes", dest="max_line_bytes", type=int, default=DEFAULT_MAX_LINE_BYTES, help=MAX_LINE_BYTES_HELP)
    p.set_defaults(func=run_clean)

    p = data.add_parser("split", help="Stratified train/validation/test split with leakage check.")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="Folder for train.jsonl, validation.jsonl, test.jsonl.")
    p.add_argument("--validation", type=float, default=0.1, help="Share (0-1) or count (>=1) of examples.")
    p.add_argument("--test", type=float, default=0.1, help="Share (0-1) or count (>=1) of examples.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stratify", choices=["auto", "label", "length", "none"], default="auto")
    p.add_argument("--max-labels", dest="max_labels", type=int, default=None,
                   help="Most distinct answers for the data to count as labels [default: auto].")
    p.add_argument("--format", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--max-line-bytes", dest="max_line_bytes", type=int, default=DEFAULT_MAX_LINE_BYTES, help=MAX_LINE_BYTES_HELP)
    p.set_defaults(func=run_split)

    p = data.add_parser("convert", help="Convert between chat, alpaca, prompt-completion and sharegpt.")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--to", required=True, choices=["chat", "alpaca", "prompt-completion", "sharegpt"])
    p.add_argument("--system", default=None, help="Add this system prompt (replaces an existing one).")
    p.add_argument("--format", default="auto", help="Force the input format.")
    p.set_defaults(func=run_convert)

    p = data.add_parser("stats", help="Counts, token lengths, labels, duplicates, charset, diversity; --html for plots.")
    p.add_argument("file")
    p.add_argument("--model", default="smollm2", help="Tokenizer for token counts ('none': whitespace words).")
    p.add_argument("--html", default=None, help="Write a self-contained HTML report with plots here.")
    p.add_argument("--format", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--max-line-bytes", dest="max_line_bytes", type=int, default=DEFAULT_MAX_LINE_BYTES, help=MAX_LINE_BYTES_HELP)
    p.set_defaults(func=run_stats)


def _tokenizer(model: str | None):  # noqa: ANN202
    if not model or model == "none":
        return None
    from tailored.models.load import load_tokenizer, local_folder

    return load_tokenizer(local_folder(model))


def run_clean(args: argparse.Namespace) -> int:
    from tailored.data.clean import clean_file
    from tailored.errors import ConfigError

    if args.max_seq_length and args.model == "none":
        raise ConfigError("--max-seq-length needs a tokenizer", hint="add --model smollm2 (or your model's folder)")
    report = clean_file(args.file, args.output, removed_path=args.removed, keep=args.keep, near_threshold=args.near_threshold,
                        tokenizer=_tokenizer(args.model), max_seq_length=args.max_seq_length, format=args.format,
                        max_line_bytes=args.max_line_bytes)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


def run_split(args: argparse.Namespace) -> int:
    from tailored.data.split import split_file

    report = split_file(args.file, args.output, validation=args.validation, test=args.test, seed=args.seed,
                        stratify=args.stratify, max_labels=args.max_labels, format=args.format,
                        max_line_bytes=args.max_line_bytes)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from tailored.data.convert import convert_file

    n = convert_file(args.file, args.output, to=args.to, system=args.system, format=args.format)
    print(f"wrote {n} examples as {args.to} to {args.output}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from tailored.data.stats import compute_stats, write_html

    stats = compute_stats(args.file, tokenizer=_tokenizer(args.model), format=args.format, max_line_bytes=args.max_line_bytes)
    if args.html:
        write_html(stats, args.html)
    print(json.dumps(stats.to_dict(), indent=2) if args.json else stats.render())
    if args.html:
        print(f"HTML report: {args.html}")
    return 0
