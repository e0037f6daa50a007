"""``instructgpt data``: validate record files and import the bundled datasets.

    instructgpt data validate FILE... [--kind KIND] [--max-line-bytes N]
    instructgpt data import SOURCE [--input PATH] --out PATH [--include-synthetic]
    instructgpt data prepare --inputs FILE... [--out-dir DIR] [flags]
    instructgpt data agreement FILE... [--reference FILE] [flags]

``prepare`` and ``agreement`` are typed configs (``--config run.yaml`` + flags, ``--help``):
``prepare`` turns raw prompts into the SFT / RM / PPO prompt sets
(``instructgpt.data.prepare``), ``agreement`` reports inter-labeler agreement
(``instructgpt.labelers.agreement``).

``validate`` prints each problem as ``file:line: field: reason`` on stdout and a summary on
stderr, and exits 1 when there is any problem. ``import`` writes the records atomically.
Data errors are reported in one line each, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import tyro
from pydantic import ValidationError

from instructgpt.config import check
from instructgpt.data.importers import DEFAULT_PATHS, IMPORTERS, find_data_root
from instructgpt.data.jsonl import MAX_LINE_BYTES, DataError, write_jsonl_atomic
from instructgpt.data.schemas import KINDS
from instructgpt.data.validate import validate_file


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instructgpt data", description="Validate record files; import datasets.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("validate", help="check JSONL record files")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--kind", choices=list(KINDS), help="record kind (default: detect per file)")
    check.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=MAX_LINE_BYTES,
        help="longest line accepted, in bytes (default: %(default)s)",
    )

    load = commands.add_parser("import", help="turn a bundled dataset into records")
    load.add_argument("source", choices=list(IMPORTERS))
    load.add_argument(
        "--input", type=Path, help="source file (default: the bundled copy under $INSTRUCTGPT_DATA or shared/data)"
    )
    load.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    load.add_argument("--include-synthetic", action="store_true", help="oasst: keep best replies written by a model")
    # Listed for --help only: main() hands these two to their typed configs before argparse.
    commands.add_parser("prepare", help="raw prompts -> user-split SFT / RM / PPO prompt sets (--help)")
    commands.add_parser("agreement", help="inter-labeler agreement and screening (--help)")
    return parser


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _validate(args: argparse.Namespace) -> int:
    reports = [validate_file(path, args.kind, args.max_line_bytes) for path in args.files]
    problems = [p for report in reports for p in report.problems]
    for problem in problems:
        print(problem)
    files = _plural(len(reports), "file")
    if problems:
        bad = sum(1 for report in reports if report.problems)
        print(f"{files}, {bad} with problems, {_plural(len(problems), 'problem')}", file=sys.stderr)
        return 1
    records = sum(report.records for report in reports)
    print(f"OK: {files}, {_plural(records, 'record')}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    if args.include_synthetic and args.source != "oasst":
        print("--include-synthetic applies to the oasst source only", file=sys.stderr)
        return 2
    if args.input is None and args.source not in DEFAULT_PATHS:
        print(f"{args.source} has no bundled input: give --input", file=sys.stderr)
        return 2
    source = args.input or find_data_root() / DEFAULT_PATHS[args.source]
    if not args.out.parent.is_dir():
        print(f"no folder {args.out.parent} to write {args.out.name} in", file=sys.stderr)
        return 2
    if args.out.resolve() == Path(source).resolve():
        print(f"refusing to overwrite the input {source}", file=sys.stderr)
        return 2
    options = {"include_synthetic": True} if args.include_synthetic else {}
    records = IMPORTERS[args.source](source, **options)
    write_jsonl_atomic(args.out, records)
    print(f"{args.source}: {_plural(len(records), 'record')} from {source} written to {args.out}")
    return 0


def _prepare(argv: list[str]) -> int:
    from instructgpt.cli.stages import _command
    from instructgpt.data.prepare import PrepareConfig, prepare, summary

    return _command(PrepareConfig, argv, "data prepare", lambda c: print(summary(prepare(c))))


@dataclass
class AgreementConfig:
    """Inter-labeler agreement on items labelled by several labelers (overall and per labeler,
    95% bootstrap intervals), and each labeler's agreement with reference labels (screening)."""

    files: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Rankings and/or comparisons files (JSONL)."""
    reference: tuple[Path, ...] = ()
    """Reference labels to screen every labeler against (the paper's screening)."""
    cutoff: float = 0.75
    """Screening: agreement with the reference needed to pass (the paper's soft cutoff)."""
    bootstrap: int = 1000
    """Bootstrap resamples of prompts for the 95% intervals (0: no interval)."""
    seed: int = 0
    """Seed of the bootstrap."""
    json_out: Path | None = None
    """Also write the full report as JSON to this file."""

    def validate(self) -> None:
        check(len(self.files) > 0, "files", "give at least one rankings or comparisons file")
        check(0 < self.cutoff <= 1, "cutoff", f"must be in (0, 1], got {self.cutoff}")
        check(self.bootstrap >= 0, "bootstrap", "must not be negative")


def _percent(rate) -> str:
    if rate.rate is None:
        return "-"
    interval = f" [{100 * rate.low:.1f}, {100 * rate.high:.1f}]" if rate.low is not None else ""
    return f"{100 * rate.rate:.1f}%{interval} of {rate.judgments:,}"


def _run_agreement(config: AgreementConfig) -> None:
    from instructgpt.data.prepare import write_json_atomic
    from instructgpt.data.schemas import Demonstration
    from instructgpt.labelers.agreement import agreement, screen
    from instructgpt.labelers.human import read_exports

    records = [r for r in read_exports(config.files) if not isinstance(r, Demonstration)]
    report = agreement(records, n_boot=config.bootstrap, seed=config.seed)
    print(
        f"prompts labelled by 2+ labelers: {report.prompts:,}; shared judgments with a tie, left out: {report.ties:,}"
    )
    print(f"overall pairwise agreement: {_percent(report.overall)}")
    for who, rate in report.per_labeler.items():
        print(f"  {who:<24} {_percent(rate)}")
    result = {"agreement": asdict(report)}
    if config.reference:
        reference = [r for r in read_exports(config.reference) if not isinstance(r, Demonstration)]
        screened = screen(records, reference, config.cutoff, config.bootstrap, config.seed)
        print(f"screening against {len(reference):,} reference records (cutoff {100 * config.cutoff:.0f}%):")
        for who, s in screened.items():
            print(f"  {who:<24} {_percent(s.agreement):<40} {'pass' if s.passed else 'below cutoff'}")
        result["screening"] = {who: asdict(s) for who, s in screened.items()}
    if config.json_out is not None:
        write_json_atomic(config.json_out, result)


def _agreement(argv: list[str]) -> int:
    from instructgpt.cli.stages import _command

    return _command(AgreementConfig, argv, "data agreement", _run_agreement)


def main(argv: list[str]) -> int:
    """Runs ``instructgpt data`` with ``argv`` (the words after ``data``); returns the exit
    status: 0 success, 1 invalid data, 2 bad usage or an unreadable input."""
    if argv[:1] == ["prepare"]:
        return _prepare(argv[1:])
    if argv[:1] == ["agreement"]:
        return _agreement(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on usage errors
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _validate(args) if args.command == "validate" else _import(args)
    except DataError as e:
        print(e, file=sys.stderr)
    except (ValidationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
    return 2
