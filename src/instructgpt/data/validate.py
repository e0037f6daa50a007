"""Validating data files: every problem in every file, with the record kind detected per file.

When no kind is given, a file's kind comes from the fields of its first record
(``schemas.detect_kind``, then the other formats ``sources`` reads: TRL ``completion`` or
``messages`` records are demonstrations, ``chosen``/``rejected`` pairs rankings); every record of
the file is then checked against that kind. Demonstrations and rankings are read through
``instructgpt.data.sources`` (so parquet, CSV and ``datasets`` folders are checked too, with an
optional column mapping); prompts and comparisons are JSON Lines only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from instructgpt.data import sources
from instructgpt.data.jsonl import MAX_LINE_BYTES, Problem, iter_models
from instructgpt.data.schemas import KINDS, detect_kind


@dataclass(frozen=True)
class FileReport:
    """The outcome of validating one file."""

    path: str
    """The file, as given."""
    kind: str | None
    """The record kind checked against; None when it could not be told."""
    records: int = 0
    """How many records passed."""
    problems: list[Problem] = field(default_factory=list)
    """Everything wrong with the file, in line order."""


def _first_object(path: str | os.PathLike, max_line_bytes: int) -> tuple[int, dict] | None:
    for item in sources.iter_rows(path, max_line_bytes):
        if not isinstance(item, Problem):
            return item
    return None


def _kind_of(row: dict, columns: Mapping[str, str]) -> str | None:
    """Our kinds by their distinctive fields first, then the other formats ``sources`` reads."""
    row = sources.mapped(row, columns)
    return detect_kind(row) or next((k for k in sources.FORMATS if sources.row_format(row, k)), None)


def _undetectable(path: str | os.PathLike, max_line_bytes: int, first: tuple[int, dict] | None) -> FileReport:
    """The file's row-level problems, plus one saying the kind is unknown if some row
    (``first``) is an object."""
    problems = [p for p in sources.iter_rows(path, max_line_bytes) if isinstance(p, Problem)]
    if first is not None:
        reason = (
            f"cannot tell the record kind from the fields {sorted(first[1])}; kinds are {', '.join(KINDS)}: pass --kind"
        )
        problems.append(Problem(str(path), first[0], "-", reason, sources.location_unit(path)))
    return FileReport(str(path), None, 0, sorted(problems, key=lambda p: p.line))


def validate_file(
    path: str | os.PathLike,
    kind: str | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    columns: Mapping[str, str] | None = None,
) -> FileReport:
    """Checks every record of one file against ``kind`` (detected when None); ``columns`` maps our
    field names to the source's (demonstrations and rankings only)."""
    columns = dict(columns or {})
    if kind is None:
        first = _first_object(path, max_line_bytes)
        kind = _kind_of(first[1], columns) if first else None
        if kind is None:
            return _undetectable(path, max_line_bytes, first)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    if kind in sources.FORMATS:
        items = sources.iter_records(path, kind, columns, max_line_bytes)
    elif sources.location_unit(path) == "line":
        items = iter_models(path, KINDS[kind], max_line_bytes)
    else:
        reason = f"{kind} are read from JSON Lines only (demonstrations and rankings also from tables)"
        return FileReport(str(path), kind, 0, [Problem(str(Path(path)), 0, "-", reason)])
    records, problems = 0, []
    for item in items:
        if isinstance(item, Problem):
            problems.append(item)
        else:
            records += 1
    return FileReport(str(path), kind, records, problems)


def validate_files(
    paths: Iterable[str | os.PathLike],
    kind: str | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    columns: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem in every file; an empty list means all files are valid."""
    return [p for path in paths for p in validate_file(path, kind, max_line_bytes, columns).problems]
