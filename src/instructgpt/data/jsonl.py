"""Reading and writing JSONL record files, with every problem reported as ``file:line``.

Reading never trusts the file. Lines are read as bytes with a bounded ``readline``, so a
huge line never sits in memory whole, and each line is decoded on its own, so one bad byte
costs one line. Blank lines are skipped. Each problem is a ``Problem`` whose ``str`` is
``file:line: field: reason``; ``field`` is the dotted location inside the record
(``responses.2``, ``prompt.messages.0.role``) or ``-`` when the whole line is at fault, and
line 0 means the whole file (missing, unreadable or empty). Files ending in ``.gz`` are
read and written gzip-compressed. Rows of a table (parquet, CSV, a ``datasets`` folder, read by
``instructgpt.data.sources``) are Problems too, written ``file: row N: field: reason``.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from instructgpt.data.schemas import KINDS
from instructgpt.files import atomic_file

MAX_LINE_BYTES = 1_000_000
"""Default cap on the size of one line, newline excluded."""

_SKIP_CHUNK = 1 << 16  # bytes read at a time while skipping an over-long line


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data file."""

    path: str
    """The file, as given."""
    line: int
    """1-based line number; 0 for the whole file."""
    field: str
    """Dotted location in the record, or ``-`` for the whole line or file."""
    reason: str
    """What is wrong, in words."""
    unit: str = "line"
    """``line`` (1-based line of a text file) or ``row`` (0-based row of a table, as ``dataset[N]``)."""

    def __str__(self) -> str:
        where = f"{self.line}" if self.unit == "line" else f" {self.unit} {self.line}"
        return f"{self.path}:{where}: {self.field}: {self.reason}"


class DataError(ValueError):
    """A data file is unusable; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _open(path: Path) -> Any:  # a binary file object: GzipFile or BufferedReader
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _skip_line(f: IO[bytes]) -> int:
    """Reads up to and including the next newline in bounded chunks; returns the number of
    bytes skipped before that newline."""
    skipped = 0
    while chunk := f.readline(_SKIP_CHUNK):
        if chunk.endswith(b"\n"):
            return skipped + len(chunk) - 1
        skipped += len(chunk)
    return skipped


def _parse(raw: bytes, path: str, number: int) -> dict | Problem | None:
    """One line's bytes as a JSON object, a Problem, or None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Problem(path, number, "-", f"invalid UTF-8 at byte {e.start} of the line")
    if number == 1:
        text = text.removeprefix("\ufeff")  # tolerate a byte-order mark
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "" if raw.endswith(b"\n") else "; the file may be truncated"
        return Problem(path, number, "-", f"invalid JSON: {e.msg} (column {e.colno}){hint}")
    if not isinstance(value, dict):
        return Problem(path, number, "-", f"expected a JSON object, got {_json_type(value)}")
    return value


def iter_objects(path: str | os.PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, dict] | Problem]:
    """Yields ``(line_number, object)`` for each JSON-object line and a Problem for each bad
    line, then a line-0 Problem if the file held no non-blank line or could not be read."""
    name, number, seen_content = str(path), 0, False
    try:
        with _open(Path(path)) as f:
            while raw := f.readline(max_line_bytes + 1):
                number += 1
                if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                    size = len(raw) + _skip_line(f)
                    seen_content = True
                    yield Problem(
                        name,
                        number,
                        "-",
                        f"line is {size:,} bytes, over the limit of {max_line_bytes:,}",
                    )
                    continue
                item = _parse(raw, name, number)
                seen_content = seen_content or item is not None
                if isinstance(item, dict):
                    yield number, item
                elif item is not None:
                    yield item
    except FileNotFoundError:
        yield Problem(name, 0, "-", "no such file")
        return
    except (OSError, EOFError, zlib.error) as e:  # unreadable, a folder, or corrupt gzip
        where = number + 1 if number else 0  # the line being read, or the whole file
        yield Problem(name, where, "-", f"cannot read: {e}")
        return
    if not seen_content:
        yield Problem(name, 0, "-", "file is empty: no records")


def iter_csv(path: Path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Yields ``(line, row)`` for each record of a CSV file with a header, ``line`` being the
    record's first line (a quoted field may span several); a missing ``required`` column is a
    DataError naming the file's line 1."""
    import csv

    with Path(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(required) - set(reader.fieldnames or ())
        if missing:
            raise DataError([Problem(str(path), 1, ", ".join(sorted(missing)), "missing column(s)")])
        end = 1  # the last line read
        for row in reader:
            line, end = end + 1, reader.line_num
            yield line, row


def problems_from_error(path: str, line: int, error: ValidationError) -> list[Problem]:
    """One Problem per pydantic error, located by its dotted field path."""
    problems = []
    for e in error.errors():
        field = ".".join(str(part) for part in e["loc"]) or "-"
        reason = e["msg"].removeprefix("Value error, ")
        if e["type"].endswith("_type"):  # a wrong JSON type: say which one was found
            reason += f", got {_json_type(e['input'])}"
        problems.append(Problem(path, line, field, reason))
    return problems


def iter_models(
    path: str | os.PathLike, model: type[BaseModel], max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[BaseModel | Problem]:
    """Yields each line validated as ``model``, or the Problems that stop it validating."""
    for item in iter_objects(path, max_line_bytes):
        if isinstance(item, Problem):
            yield item
            continue
        number, value = item
        try:
            yield model.model_validate(value)
        except ValidationError as e:
            yield from problems_from_error(str(path), number, e)


def read_models(path: str | os.PathLike, model: type[BaseModel], max_line_bytes: int = MAX_LINE_BYTES) -> list:
    """All lines of a file as ``model`` instances; raises DataError listing every problem."""
    return collect(iter_models(path, model, max_line_bytes))


def collect(items: Iterable[BaseModel | Problem]) -> list:
    """The records of a stream of records and Problems; raises DataError listing every problem."""
    records: list = []
    problems: list[Problem] = []
    for item in items:
        if isinstance(item, Problem):
            problems.append(item)
        else:
            records.append(item)
    if problems:
        raise DataError(problems)
    return records


def read_records(path: str | os.PathLike, kind: str, max_line_bytes: int = MAX_LINE_BYTES) -> list:
    """All records of a file of one kind (``prompts``, ``demonstrations``, ``rankings``);
    raises DataError listing every problem as ``file:line: field: reason``."""
    return read_models(path, KINDS[kind], max_line_bytes)


def iter_problems(
    path: str | os.PathLike, kind: str | None = None, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Problem]:
    """Every problem in a file. With ``kind`` None only the JSONL layer is checked (each
    line one JSON object); ``instructgpt.data.validate`` also detects the kind."""
    items = iter_objects(path, max_line_bytes) if kind is None else iter_models(path, KINDS[kind], max_line_bytes)
    return (item for item in items if isinstance(item, Problem))


def _to_json(record: BaseModel | dict) -> str:
    if isinstance(record, BaseModel):
        record = record.model_dump(mode="json", exclude_none=True)
    return json.dumps(record, ensure_ascii=False)


def _write_lines(f: IO[bytes] | gzip.GzipFile, records: Iterable[BaseModel | dict]) -> None:
    for record in records:
        f.write(_to_json(record).encode("utf-8") + b"\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[BaseModel | dict]) -> None:
    """Writes one JSON object per line (UTF-8, not ASCII-escaped; ``None`` fields of models
    left out) so that ``path`` holds either its old content or all the new records.

    The records go to a temporary file in the same folder, which is flushed, fsynced and
    then renamed over ``path``; if anything fails, the temporary file is removed and the old
    file is untouched.
    """
    path = Path(path)
    with atomic_file(path) as f:
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
                _write_lines(gz, records)
        else:
            _write_lines(f, records)
