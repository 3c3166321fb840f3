"""``tailored data check``: validate every line and print a report (exit 1 on any error)."""

from __future__ import annotations

import argparse
import json

from tailored.cli.common import group
from tailored.cli.datatools_cmd import FORMAT_HELP, add_import_flags, import_options
from tailored.data.jsonl import DEFAULT_MAX_LINE_BYTES, MAX_LINE_BYTES_HELP


def register(sub: argparse._SubParsersAction) -> None:
    data = group(sub, "data", "Check, clean, split, convert and describe datasets.")
    p = data.add_parser("check", help="Validate every line (or row of a table/labelling export); report problems by "
                        "category with line/row numbers.")
    p.add_argument("file")
    p.add_argument("--model", default="smollm2", help="Model whose tokenizer counts tokens ('none' to skip token checks).")
    p.add_argument("--format", default="auto", help=FORMAT_HELP)
    p.add_argument("--max-seq-length", dest="max_seq_length", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=None, help="Epochs for the total-token and time estimate (default: auto).")
    p.add_argument("--validation", default="auto",
                   help="As `tailored train --validation`: auto (hold out part of this file), none, or FILE; sets what the "
                        "token and time estimate counts as trained on, and the auto epochs.")
    p.add_argument("--early-stopping-patience", dest="early_stopping_patience", type=_patience, default="auto",
                   help="As `tailored train --early-stopping-patience`: auto, 0 (never) or N; with validation data and a "
                        "patience above 0 the auto epochs are the guarded ones. [default: auto]")
    p.add_argument("--neighbours", default="auto", type=_neighbours,
                   help="As `tailored train --neighbours`: auto, 0 (off) or K labelled training requests listed in each "
                        "classification prompt; counted in the token and time estimate. [default: auto]")
    p.add_argument("--max-line-bytes", dest="max_line_bytes", type=int, default=DEFAULT_MAX_LINE_BYTES, help=MAX_LINE_BYTES_HELP)
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")
    add_import_flags(p, system=True)
    p.set_defaults(func=run_check)


def _patience(value: str) -> int | str:
    from tailored.config.auto import check_patience

    try:
        return check_patience(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _neighbours(value: str) -> int | str:
    if value == "auto" or value.isdigit():
        return value if value == "auto" else int(value)
    raise argparse.ArgumentTypeError(f"{value!r}: expected auto, 0 (off) or a number of labelled requests to list")


def run_check(args: argparse.Namespace) -> int:
    from tailored.data.imports import using
    from tailored.train.preflight import check_data

    with using(import_options(args)) as reading:  # tables and labelling exports: which columns to read
        report = check_data(args.file, model=None if args.model == "none" else args.model, format=args.format,
                            max_seq_length=args.max_seq_length, epochs=args.epochs, max_line_bytes=args.max_line_bytes,
                            validation=args.validation, early_stopping_patience=args.early_stopping_patience,
                            neighbours=args.neighbours)
    layout = reading.layouts[0] if reading.layouts else None
    if args.json:
        print(json.dumps({**report.to_dict(), **({"layout": layout.to_dict()} if layout else {})}, indent=2))
    else:
        print((layout.describe() + "\n" if layout else "") + report.render())
    return 1 if report.has_errors else 0
