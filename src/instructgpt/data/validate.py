"""Validating data files: every problem in every file, with the record kind detected per file.

When no kind is given, a file's kind comes from the fields of its first line that is a JSON
object (``schemas.detect_kind``); every record of the file is then checked against that kind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from instructgpt.data.jsonl import MAX_LINE_BYTES, Problem, iter_models, iter_objects
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
    for item in iter_objects(path, max_line_bytes):
        if not isinstance(item, Problem):
            return item
    return None


def _undetectable(path: str | os.PathLike, max_line_bytes: int, first: tuple[int, dict] | None) -> FileReport:
    """The file's line-level problems, plus one saying the kind is unknown if some line
    (``first``) is an object."""
    problems = [p for p in iter_objects(path, max_line_bytes) if isinstance(p, Problem)]
    if first is not None:
        reason = (
            f"cannot tell the record kind from the fields {sorted(first[1])}; kinds are {', '.join(KINDS)}: pass --kind"
        )
        problems.append(Problem(str(path), first[0], "-", reason))
    return FileReport(str(path), None, 0, sorted(problems, key=lambda p: p.line))


def validate_file(path: str | os.PathLike, kind: str | None = None, max_line_bytes: int = MAX_LINE_BYTES) -> FileReport:
    """Checks every line of one file against ``kind`` (detected when None)."""
    if kind is None:
        first = _first_object(path, max_line_bytes)
        kind = detect_kind(first[1]) if first else None
        if kind is None:
            return _undetectable(path, max_line_bytes, first)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    records, problems = 0, []
    for item in iter_models(path, KINDS[kind], max_line_bytes):
        if isinstance(item, Problem):
            problems.append(item)
        else:
            records += 1
    return FileReport(str(path), kind, records, problems)


def validate_files(
    paths: Iterable[str | os.PathLike],
    kind: str | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[Problem]:
    """Every problem in every file; an empty list means all files are valid."""
    return [p for path in paths for p in validate_file(path, kind, max_line_bytes).problems]
