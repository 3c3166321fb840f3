"""``tailored report``: one self-contained HTML page for a run (curves, metrics, answers, red flags)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Write an HTML report for a run: loss curves, metrics, answers, red flags.",
                       description="Loss curves and red flags from the run folder, plus every evaluation saved in it "
                                   "by `tailored eval` (or run one now with --data).")
    p.add_argument("run", help="Run folder.")
    p.add_argument("--html", dest="html_out", required=True, help="Output HTML file.")
    p.add_argument("--data", default=None, help="Also evaluate on this held-out file (cached) and include it.")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from tailored.errors import CheckpointError
    from tailored.eval.report import saved_evals, write_html
    from tailored.config.manifest import is_run_dir

    if not is_run_dir(args.run):
        raise CheckpointError(f"{args.run} is not a run folder (no manifest.json)",
                              hint="pass the folder `tailored train` printed; for a base model use `tailored eval MODEL --data TEST --html OUT`")
    if args.data:
        from tailored.eval.run import evaluate

        evaluate(args.run, args.data)  # saved into RUN/evals/, picked up below
    evals = saved_evals(args.run)
    path = write_html(args.html_out, run_dir=args.run, evals=evals)
    print(f"html report: {path} ({len(evals)} evaluation(s) included)")
    return 0
