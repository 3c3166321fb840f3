"""``tailored compare`` (measure zero-shot, few-shot, RAG and fine-tuned runs on one test set) and ``tailored advise``."""

from __future__ import annotations

import argparse

from tailored.config.files import write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="Zero-shot, few-shot, RAG and fine-tuned runs on the same held-out set, and a verdict.",
                       description="Score each strategy with `tailored eval`'s metrics on the same test set: quality with its "
                                   "95% interval, latency p50/p95, prompt tokens, cost per 1,000 requests (here, measured; "
                                   "on a GPU, estimated), training cost and red flags; then say which to use and why.")
    p.add_argument("--test", required=True, help="Held-out chat data (the last assistant turn is the reference).")
    p.add_argument("--train", default=None, help="Training data: few-shot examples, RAG corpus without --docs, and a run "
                                                 "trained with defaults when no --run is given.")
    p.add_argument("--docs", default=None, help="Folder of .txt/.md/.html/.pdf documents for RAG (indexed once beside it).")
    p.add_argument("--run", dest="runs", metavar="RUN", action="append", default=[], help="A fine-tuned run folder to score (repeatable).")
    p.add_argument("--model", default=None, help="Base model (default: the run's base, else the embedded model).")
    p.add_argument("--task", default="auto", choices=["auto", "classification", "generation", "sql"], help="[default: auto]")
    p.add_argument("--labels", default=None, help="Label set for classification (JSON list or one per line).")
    p.add_argument("--strategies", default="zero-shot,few-shot,rag,fine-tuned",
                   help="Comma-separated subset of zero-shot, few-shot, rag, fine-tuned. [default: all]")
    p.add_argument("--limit", type=int, default=None, help="Score only the first N test examples.")
    p.add_argument("--shots", type=int, default=8, help="Most few-shot examples per query (fewer when they do not fit). [default: 8]")
    p.add_argument("--top-k", dest="top_k", type=int, default=3, help="Chunks retrieved per query. [default: 3]")
    p.add_argument("--max-prompt-tokens", dest="max_prompt_tokens", type=int, default=1024,
                   help="Examples and chunks are added while the prompt stays within this. [default: 1024]")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None, help="Answer length limit.")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=1,
                   help="Prompts per generation batch; a request's latency is its batch's time. [default: 1]")
    p.add_argument("--seed", type=int, default=0, help="Tie-breaking of few-shot selection. [default: 0]")
    p.add_argument("--gpu", default="h100", help="GPU of the price table for the cost estimate. [default: h100]")
    p.add_argument("--prices", default=None, help="YAML file overriding the shipped price table.")
    p.add_argument("--json", dest="json_out", default=None, help="Write the full comparison as JSON here.")
    p.add_argument("--html", dest="html_out", default=None, help="Write an HTML page with the table and a quality-vs-cost plot.")
    p.set_defaults(func=run_compare)

    a = sub.add_parser("advise", help="Inspect the data and recommend prompting, RAG or fine-tuning (nothing heavy runs).",
                       description="Read the data (task, size, labels, answer lengths, duplicates, facts the prompts lack) and "
                                   "recommend a strategy with reasons, settings, the pre-flight estimate and the commands.")
    a.add_argument("--data", required=True, help="Training data (labelled pairs).")
    a.add_argument("--docs", default=None, help="Folder of documents the answers may come from.")
    a.add_argument("--test", default=None, help="Held-out data for the confirming `tailored compare` command.")
    a.add_argument("--gpu", default=None, help="GPU of the price table for the estimate (default: this machine).")
    a.add_argument("--budget", type=float, default=None, help="Most to spend on training, USD.")
    a.add_argument("--model", default=None, help="Base model (default: the embedded one).")
    a.add_argument("--json", dest="json_out", action="store_true", help="Print the advice as JSON.")
    a.set_defaults(func=run_advise)


def run_compare(args: argparse.Namespace) -> int:
    from tailored.compare import compare
    from tailored.compare.report import render_text, write_html
    from tailored.train.threads import configure_threads

    configure_threads("auto")
    report = compare(args.test, train=args.train, docs=args.docs, runs=args.runs, model=args.model, task=args.task,
                     labels=args.labels, strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
                     limit=args.limit, shots=args.shots, top_k=args.top_k, max_prompt_tokens=args.max_prompt_tokens,
                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed, gpu=args.gpu,
                     prices=args.prices)
    print(render_text(report))
    if args.json_out:
        write_json(args.json_out, report, indent=1)
        print(f"json: {args.json_out}")
    if args.html_out:
        write_html(args.html_out, report)
        print(f"html: {args.html_out}")
    return 0


def run_advise(args: argparse.Namespace) -> int:
    import json

    from tailored.compare.advise import advise, render_advice

    advice = advise(args.data, docs=args.docs, test=args.test, gpu=args.gpu, budget=args.budget, model=args.model)
    print(json.dumps(advice, indent=1) if args.json_out else render_advice(advice))
    return 0
