"""``instructgpt data``: validate record files and import the bundled datasets.

    instructgpt data validate FILE... [--kind KIND] [--columns OURS=THEIRS...] [--max-line-bytes N]
    instructgpt data import SOURCE --out PATH [--input PATH] [--include-synthetic]
    instructgpt data convert FILE --kind KIND --out PATH [--columns OURS=THEIRS...]
    instructgpt data prepare --inputs FILE... [--out-dir DIR] [flags]
    instructgpt data agreement FILE... [--reference FILE] [flags]

Each subcommand is a typed config (``--config run.yaml`` + flags; ``--help`` lists the fields):
``prepare`` turns raw prompts into the SFT / RM / PPO prompt sets
(``instructgpt.data.prepare``), ``agreement`` reports inter-labeler agreement
(``instructgpt.labelers.agreement``).

``validate`` prints each problem as ``file:line: field: reason`` (``file: row N: ...`` for a
table) on stdout and a summary on stderr, and exits 1 when there is any problem. ``import`` and
``convert`` write the records atomically; ``convert`` reads demonstrations or rankings in any
format ``instructgpt.data.sources`` reads (TRL records, parquet, CSV, a ``datasets`` folder),
renaming columns with ``--columns prompt=question response=answer``.
Data errors are reported in one line each, never as a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tyro
from pydantic import ValidationError

from instructgpt.config import ConfigError, check, parse
from instructgpt.data.importers import DEFAULT_PATHS, IMPORTERS, find_data_root
from instructgpt.data.jsonl import MAX_LINE_BYTES, DataError, write_jsonl_atomic
from instructgpt.data.schemas import KINDS
from instructgpt.data.validate import validate_file


@dataclass
class ValidateConfig:
    """Check JSONL record files: every problem as file:line: field: reason (exit 1 if any)."""

    files: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Record files (JSONL, optionally .gz)."""
    kind: str | None = None
    """Record kind (prompts, demonstrations, rankings, comparisons); default: detected per file."""
    columns: tuple[str, ...] = ()
    """Column mapping OURS=THEIRS (e.g. prompt=question response=answer), for demonstrations and rankings."""
    max_line_bytes: int = MAX_LINE_BYTES
    """Longest line accepted, in bytes."""

    def validate(self) -> None:
        check(len(self.files) > 0, "files", "give at least one file")
        _check_columns(self.columns)
        check(self.kind is None or self.kind in KINDS, "kind", f"must be one of {sorted(KINDS)}")
        check(self.max_line_bytes >= 1, "max_line_bytes", f"must be at least 1, got {self.max_line_bytes}")


@dataclass
class ImportConfig:
    """Turn a bundled dataset into records (written atomically)."""

    source: tyro.conf.Positional[str] = ""
    """Dataset: alpaca, dolly, oasst, hh-rlhf, ... (the importers' names)."""
    out: Path | None = None
    """JSONL file to write (required)."""
    input: Path | None = None
    """Source file (default: the bundled copy under $INSTRUCTGPT_DATA or shared/data)."""
    include_synthetic: bool = False
    """oasst: keep best replies written by a model."""

    def validate(self) -> None:
        check(self.source in IMPORTERS, "source", f"must be one of {sorted(IMPORTERS)}")
        check(self.out is not None, "out", "give the JSONL file to write")
        check(not self.include_synthetic or self.source == "oasst", "include_synthetic", "applies to oasst only")
        check(self.input is not None or self.source in DEFAULT_PATHS, "input", f"{self.source} has no bundled input")


@dataclass
class ConvertConfig:
    """Read demonstrations or rankings in any supported format and write them as our JSONL (atomically)."""

    file: tyro.conf.Positional[Path | None] = None
    """Source: JSONL, TRL prompt/completion or messages records, chosen/rejected pairs; JSON, parquet, CSV, arrow,
    or a datasets save_to_disk folder."""
    kind: str = ""
    """demonstrations or rankings (required)."""
    out: Path | None = None
    """JSONL file to write (required)."""
    columns: tuple[str, ...] = ()
    """Column mapping OURS=THEIRS, e.g. prompt=question response=answer."""

    def validate(self) -> None:
        check(self.file is not None, "file", "give the file to convert")
        check(self.kind in ("demonstrations", "rankings"), "kind", "must be demonstrations or rankings")
        check(self.out is not None, "out", "give the JSONL file to write")
        _check_columns(self.columns)


def _check_columns(columns: tuple[str, ...]) -> None:
    from instructgpt.data.sources import parse_columns

    try:
        parse_columns(columns)
    except ValueError as e:
        raise ConfigError(f"columns: {e}") from None


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _validate(args: ValidateConfig) -> int:
    from instructgpt.data.sources import parse_columns

    columns = parse_columns(args.columns)
    reports = [validate_file(path, args.kind, args.max_line_bytes, columns) for path in args.files]
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


def _import(args: ImportConfig) -> int:
    assert args.out is not None  # validate()
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


def _convert(args: ConvertConfig) -> int:
    from instructgpt.data.sources import load_records, parse_columns

    assert args.file is not None and args.out is not None  # validate()
    if args.out.resolve() == args.file.resolve():
        print(f"refusing to overwrite the input {args.file}", file=sys.stderr)
        return 2
    records = load_records(args.file, args.kind, parse_columns(args.columns))
    write_jsonl_atomic(args.out, records)
    print(f"{_plural(len(records), args.kind.removesuffix('s'))} from {args.file} written to {args.out}")
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


TYPED: dict[str, tuple[type, Callable[[Any], int]]] = {
    "validate": (ValidateConfig, _validate),
    "import": (ImportConfig, _import),
    "convert": (ConvertConfig, _convert),
}


def main(argv: list[str]) -> int:
    """Runs ``instructgpt data`` with ``argv`` (the words after ``data``); returns the exit
    status: 0 success, 1 invalid data, 2 bad usage or an unreadable input."""
    if argv[:1] == ["prepare"]:
        return _prepare(argv[1:])
    if argv[:1] == ["agreement"]:
        return _agreement(argv[1:])
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in TYPED:
        usage = not argv or argv[0] in ("-h", "--help")
        print(__doc__.strip(), file=sys.stdout if usage else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    cls, action = TYPED[argv[0]]
    try:
        config = parse(cls, argv[1:], prog=f"instructgpt data {argv[0]}", description=cls.__doc__)
    except SystemExit as e:  # tyro exits on --help (0) and on usage errors (2)
        return e.code if isinstance(e.code, int) else 2
    except ConfigError as e:
        print(f"error: config: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return action(config)
    except DataError as e:
        print(e, file=sys.stderr)
    except (ValidationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
    return 2
