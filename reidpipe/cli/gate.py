"""``reidpipe gate --baseline FILE [--metrics FILE] [--spread FILE]``: CI's check of the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="a run's metrics against a committed baseline: equal where the environment "
        "is the baseline's, else within the seed spread's bands (exit 1 otherwise)",
    )
    parser.add_argument(
        "--baseline",
        required=True,
        type=Path,
        metavar="FILE",
        help="the baseline metrics (e.g. `git show HEAD:reports/metrics.json`)",
    )
    parser.add_argument(
        "--metrics",
        default=Path("reports/metrics.json"),
        type=Path,
        metavar="FILE",
        help="this run's metrics (default: reports/metrics.json)",
    )
    parser.add_argument(
        "--spread",
        default=Path("reports/seed_spread.json"),
        type=Path,
        metavar="FILE",
        help="the measured seed spread (default: reports/seed_spread.json)",
    )
    parser.add_argument(
        "--environment",
        type=Path,
        metavar="FILE",
        help="this run's environment record (reports/environment.json)",
    )
    parser.add_argument(
        "--baseline-environment",
        type=Path,
        metavar="FILE",
        help="the baseline's environment record",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        metavar="FILE",
        help="also append the table to this Markdown file (a CI job summary)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.json_files import read_json_file
    from reidpipe.report.gate import environment_notes, gate_rows, gate_table, same_environment
    from reidpipe.report.spread import read_spread

    environments = ({}, {})
    if args.environment and args.baseline_environment:
        environments = (read_json_file(args.baseline_environment), read_json_file(args.environment))
    rows = gate_rows(
        read_json_file(args.baseline),
        read_json_file(args.metrics),
        read_spread(args.spread),
        same_environment(*environments),
    )
    failed = [row for row in rows if not row.passed]
    notes = environment_notes(*environments) if environments[0] or environments[1] else []
    verdict = (
        f"{len(failed)} of {len(rows)} metrics outside what is allowed"
        if failed
        else f"all {len(rows)} metrics as allowed"
    )
    text = "\n".join(
        [
            f"## Metrics against the baseline {args.baseline}, bands from {args.spread}",
            "",
            gate_table(rows),
            "",
            *[f"- {note}" for note in notes],
            "",
            f"**{verdict}**",
            "",
        ]
    )
    sys.stdout.write(text + "\n")  # the table is the command's output, as params' YAML is
    if args.summary:
        with args.summary.open("a", encoding="utf-8") as summary:
            summary.write(text + "\n")
    (log.error if failed else log.info)(verdict)
    return 1 if failed else 0
