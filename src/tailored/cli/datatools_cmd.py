"""``tailored data clean|split|convert|stats|export-for-labelling``: the data pre-flight (each is one library call)."""

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

    p = data.add_parser("convert", help="Convert between chat, alpaca, prompt-completion and sharegpt; import CSV/TSV, "
                        "XLSX, Parquet, Arrow, datasets folders, Label Studio and Prodigy exports.")
    p.add_argument("file", help="JSONL, .csv/.tsv, .xlsx, .parquet, .arrow, a save_to_disk folder, a Label Studio "
                   ".json export or a Prodigy .jsonl.")
    p.add_argument("-o", "--output", default=None, help="The converted JSONL (not needed with --dry-run).")
    p.add_argument("--to", required=True, choices=["chat", "alpaca", "prompt-completion", "sharegpt"])
    p.add_argument("--system", default=None, help="Add this system prompt (replaces an existing one; for tables a "
                   "row's --system-column cell wins).")
    p.add_argument("--format", default="auto", help=FORMAT_HELP)
    add_import_flags(p)
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="Show the layout and the first examples as "
                   "chat JSON; write nothing.")
    p.add_argument("--show", type=int, default=3, help="Examples --dry-run shows [default: 3].")
    p.set_defaults(func=run_convert)

    p = data.add_parser("export-for-labelling", help="Write examples (e.g. a model's answers to review) as tasks a "
                        "labeller opens with the answer pre-filled: Label Studio or CSV.")
    p.add_argument("file", help="Examples ending in the answer to review (any format `data convert` reads).")
    p.add_argument("--to", required=True, choices=["label-studio", "csv"])
    p.add_argument("-o", "--output", required=True, help="Label Studio tasks (.json; its labelling config is written "
                   "next to it as OUTPUT.label-config.xml) or a .csv.")
    p.add_argument("--answer-kind", dest="answer_kind", choices=["auto", "textarea", "choices"], default="auto",
                   help="Free-text answers or a label set (auto: choices when the answers look like labels).")
    p.add_argument("--labels", default=None, help="More labels to offer as choices (comma-separated).")
    p.add_argument("--model-version", dest="model_version", default="tailored",
                   help="Name shown on the Label Studio predictions [default: tailored].")
    p.add_argument("--format", default="auto", help=FORMAT_HELP)
    add_import_flags(p)
    p.set_defaults(func=run_export_for_labelling)

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


def refuse_tables(args: argparse.Namespace, command: str) -> None:
    """``clean`` and ``split`` copy the input's lines unchanged: a table or an export has to be converted first."""
    from tailored.data.imports import import_layout
    from tailored.errors import DataError

    layout = import_layout(args.file, args.format)
    if layout is not None:
        raise DataError(f"{args.file}: data {command} copies JSONL lines as they are; this is a {layout} file",
                        hint=f"convert it first: tailored data convert {args.file} -o data.jsonl --to chat "
                             f"(then: tailored data {command} data.jsonl ...)")


def run_clean(args: argparse.Namespace) -> int:
    from tailored.data.clean import clean_file
    from tailored.errors import ConfigError

    refuse_tables(args, "clean")

    if args.max_seq_length and args.model == "none":
        raise ConfigError("--max-seq-length needs a tokenizer", hint="add --model smollm2 (or your model's folder)")
    report = clean_file(args.file, args.output, removed_path=args.removed, keep=args.keep, near_threshold=args.near_threshold,
                        tokenizer=_tokenizer(args.model), max_seq_length=args.max_seq_length, format=args.format,
                        max_line_bytes=args.max_line_bytes)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


def run_split(args: argparse.Namespace) -> int:
    from tailored.data.split import split_file

    refuse_tables(args, "split")

    report = split_file(args.file, args.output, validation=args.validation, test=args.test, seed=args.seed,
                        stratify=args.stratify, max_labels=args.max_labels, format=args.format,
                        max_line_bytes=args.max_line_bytes)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


FORMAT_HELP = ("Force the input format: a JSONL format (chat, prompt_completion, alpaca, sharegpt, text, preference) or "
               "a layout (csv, tsv, xlsx, parquet, arrow, datasets, json-rows, jsonl-rows, label-studio, "
               "label-studio-min, prodigy) [default: auto].")


def add_import_flags(p: argparse.ArgumentParser, *, system: bool = False) -> None:
    """The column and reading options of tables and labelling exports (``ImportOptions``)."""
    g = p.add_argument_group("tables and labelling exports (CSV/TSV, XLSX, Parquet, Arrow, datasets, Label Studio, Prodigy)")
    g.add_argument("--prompt-column", dest="prompt_column", default=None,
                   help="Column of the user's turn [default: prompt/question/instruction(+input)/input/query/text].")
    g.add_argument("--answer-column", dest="answer_column", default=None,
                   help="Column of the answer (Label Studio: the control's name) [default: "
                        "answer/completion/output/label/response].")
    g.add_argument("--prompt-template", dest="prompt_template", default=None,
                   help="The user's turn from several columns, e.g. 'Ticket: {subject}\\n{body}' (\\n, \\t are "
                        "a newline and a tab).")
    if system:
        g.add_argument("--system", default=None, help="A system prompt for every row (a --system-column cell wins).")
    g.add_argument("--system-column", dest="system_column", default=None,
                   help="Column of a per-row system prompt [default: system/system_prompt when present].")
    g.add_argument("--sheet", default=None, help="XLSX sheet: its name or number (1 = the first) [default: the first].")
    g.add_argument("--delimiter", default=None, help="CSV delimiter: one character, or tab/comma/semicolon/pipe "
                   "[default: sniffed].")
    g.add_argument("--encoding", default=None, help="CSV text encoding, e.g. cp1252, latin-1, utf-16 "
                   "[default: UTF-8 with or without BOM].")
    g.add_argument("--annotator", default=None, help="Take this annotator's answers (Label Studio email or id, "
                   "Prodigy session) instead of the majority.")
    g.add_argument("--split", default=None, help="The split of a DatasetDict folder [default: train].")


def import_options(args: argparse.Namespace):  # noqa: ANN201 - ImportOptions (imported lazily)
    from tailored.data.imports import ImportOptions

    def unescape(text: str | None) -> str | None:
        return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")

    return ImportOptions(prompt_column=args.prompt_column, answer_column=args.answer_column,
                         prompt_template=unescape(args.prompt_template), system=getattr(args, "system", None),
                         system_column=args.system_column, sheet=args.sheet, delimiter=args.delimiter,
                         encoding=args.encoding, annotator=args.annotator, split=args.split)


def print_problems(problems: list, title: str, limit: int = 20) -> None:
    if not problems:
        return
    print(f"{title} ({len(problems)}):")
    for p in sorted(problems, key=lambda p: p.line)[:limit]:
        print(f"  {p.where}: {p.message}" if p.line else f"  {p.message}")
    if len(problems) > limit:
        print(f"  ... and {len(problems) - limit} more")


def run_convert(args: argparse.Namespace) -> int:
    from tailored.data.convert import prepare
    from tailored.data.readers import write_jsonl
    from tailored.errors import ConfigError

    if not args.output and not args.dry_run:
        raise ConfigError("data convert needs -o OUTPUT", hint="or --dry-run to see the examples without writing")
    prepared = prepare(args.file, to=args.to, system=args.system, format=args.format, options=import_options(args))
    if prepared.layout is not None:
        print(prepared.layout.describe())
    print_problems(prepared.warnings, "warnings: not converted, or worth a look")
    prepared.refuse_errors()
    if args.dry_run:
        for row in prepared.rows[: max(0, args.show)]:
            print(json.dumps(row, ensure_ascii=False, indent=2))
        where = f" to {args.output}" if args.output else ""
        print(f"dry run: {len(prepared.rows)} examples as {args.to} would be written{where}; nothing was written")
        return 0
    write_jsonl(args.output, prepared.rows)
    print(f"wrote {len(prepared.rows)} examples as {args.to} to {args.output}")
    return 0


def run_export_for_labelling(args: argparse.Namespace) -> int:
    from tailored.data.imports import using
    from tailored.data.labelling import export_for_labelling

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    with using(import_options(args)):
        exported = export_for_labelling(args.file, args.output, to=args.to, format=args.format,
                                        model_version=args.model_version, answer_kind=args.answer_kind, labels=labels)
    print(exported.render())
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
