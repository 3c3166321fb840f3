"""``tailored eval``: held-out metrics for a run or a model, base vs tuned, and the red flags."""

from __future__ import annotations

import argparse

from tailored.config.files import write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Evaluate a run or model on held-out data (base vs tuned, red flags).",
                       description="Score answers on held-out data; compare with the base model; check for overfitting, "
                                   "catastrophic forgetting and mode collapse.")
    p.add_argument("target", help="Run folder, model folder, .gguf or 'smollm2'.")
    p.add_argument("--data", required=True, help="Held-out test file (chat JSONL, or {question, choices, answer_index} lines).")
    p.add_argument("--task", default="auto", choices=["auto", "classification", "generation", "sql", "choice"],
                   help="What to score (auto guesses from the data). [default: auto]")
    p.add_argument("--baseline", default="auto",
                   help="Model or run to compare with; 'auto' = the run's parent (a run trained with --from) or else its base model, 'none' = no comparison. [default: auto]")
    p.add_argument("--probe", default="default",
                   help="Multiple-choice probe for the forgetting check ('default' = built in, a file, or 'none'). [default: default]")
    p.add_argument("--no-collapse", dest="collapse", action="store_false", help="Skip the mode-collapse sampling.")
    p.add_argument("--labels", default=None, help="Label set for classification (JSON list or one per line).")
    p.add_argument("--constrain", default="auto", choices=["auto", "labels", "none"],
                   help="Classification: also answer with decoding held to the label set, and with the most probable "
                        "whole label (ranked), and report both accuracies beside the free one (auto: when the labels are "
                        "known from --labels or the run's training data). [default: auto]")
    p.add_argument("--json-schema", dest="json_schema", default=None,
                   help="Generate every answer held to this JSON schema file (structured output).")
    p.add_argument("--which", default="auto", help="Weights of a run: auto (the best validation step's when kept, else the final ones), final, best, or a checkpoint name (step-000050). [default: auto]")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None,
                   help="Answer length limit (default: 1.5x the longest reference + 16).")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="Prompts per generation batch. [default: 8]")
    p.add_argument("--limit", type=int, default=None, help="Evaluate only the first N examples.")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", help="Recompute instead of reading the eval cache.")
    p.add_argument("--json", dest="json_out", default=None, help="Write the full report as JSON here.")
    p.add_argument("--html", dest="html_out", default=None, help="Write a self-contained HTML report here.")
    p.set_defaults(func=run_eval)


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() in ("none", "off", "") else value


def run_eval(args: argparse.Namespace) -> int:
    from tailored.eval.report import render_text, write_html
    from tailored.eval.run import evaluate
    from tailored.train.threads import configure_threads

    configure_threads("auto")
    schema = None
    if args.json_schema:
        from tailored.eval.structured import read_schema

        schema = read_schema(args.json_schema)
    report = evaluate(args.target, args.data, task=args.task, baseline=_none(args.baseline), probe=_none(args.probe),
                      collapse=args.collapse, labels=args.labels, which=args.which, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size, limit=args.limit, use_cache=args.use_cache,
                      constrain=args.constrain, json_schema=schema)
    print(render_text(report))
    if args.json_out:
        write_json(args.json_out, report, indent=1)
        print(f"report: {args.json_out}")
    if args.html_out:
        from tailored.config.manifest import is_run_dir

        write_html(args.html_out, run_dir=args.target if is_run_dir(args.target) else None, evals=[report])
        print(f"html report: {args.html_out}")
    return 0
