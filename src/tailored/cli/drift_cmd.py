"""``tailored drift RUN``: is the traffic still what the run was trained on? The verdict, its evidence, the fix."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="Compare a run's traffic with its training data (drift verdict and fix).",
                       description="Compare the inputs a served fine-tune received (logged by `tailored serve "
                                   "--log-requests`, or a --traffic file) with the run's training inputs: domain "
                                   "classifier, MMD, distance to the training examples, labels, length, refusals, "
                                   "feedback. Writes the report into RUN/drift/.")
    p.add_argument("run", help="The run folder.")
    p.add_argument("--traffic", default=None, help="JSONL file of requests (chat lines; a final assistant turn is the "
                                                   "answer) instead of the server's log.")
    p.add_argument("--since", default=None, help="Only traffic logged since then (2026-12-01, 2026-12-01T08:00 or unix seconds).")
    p.add_argument("--project", default=None, help="Only this project's logged traffic (default: every project's).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the permutation tests and subsampling. [default: 0]")
    p.add_argument("--json", dest="json_out", default=None, help="Also write the full report as JSON here.")
    p.add_argument("--to-label", dest="to_label", default=None,
                   help="Write the inputs that drifted most (farthest first) as chat lines to label here.")
    p.add_argument("--export", dest="export", default=None,
                   help="Write the labelled traffic (answers marked good, or corrected) as chat training data here.")
    p.add_argument("--drifted-only", dest="drifted_only", action="store_true",
                   help="With --export: only the inputs far from the training data (runs the check first).")
    p.set_defaults(func=run_drift)


def _records(args: argparse.Namespace) -> list[dict]:
    from pathlib import Path

    from tailored.drift.run import read_traffic
    from tailored.errors import DataError
    from tailored.serve.traffic import TrafficLog, parse_since, store_path

    since = parse_since(args.since)
    if args.traffic:
        records = read_traffic(args.traffic)
        return [r for r in records if since is None or (r.get("created_at") or since) >= since]
    if not store_path().is_file():
        raise DataError(f"no traffic is logged here ({store_path()} does not exist)",
                        hint="serve with `tailored serve --log-requests`, or pass --traffic FILE")
    log = TrafficLog(store_path())
    try:
        return log.rows(args.project, run=str(Path(args.run).resolve()), since=since)
    finally:
        log.close()


def run_drift(args: argparse.Namespace) -> int:
    from tailored.config.files import write_json
    from tailored.config.manifest import RunFolder
    from tailored.drift.run import check, render, to_label

    RunFolder(args.run).read()  # a wrong RUN is named first, before where the traffic comes from
    records = _records(args)
    if args.export and not args.drifted_only:  # every labelled request: no check needed
        return _export(records, args)
    report = check(args.run, records, since=args.since, seed=args.seed)
    print(render(report))
    if args.json_out:
        write_json(args.json_out, report.as_dict(), indent=1)
    if args.to_label:
        print(f"wrote {to_label(report, records, args.to_label)} input(s) to label to {args.to_label}")
    if args.export:
        far = set(report.far_ids)
        return _export([r for r in records if str(r["id"]) in far], args)
    return 0


def _export(records: list[dict], args: argparse.Namespace) -> int:
    from tailored.drift.run import export_labelled

    written, left = export_labelled(records, args.export)
    print(f"wrote {written} labelled example(s) to {args.export} ({left} unrated or bad without a correction left out)")
    print(f"retrain: tailored train --from {args.run} --data {args.export} --mix-old 0.2")
    return 0
