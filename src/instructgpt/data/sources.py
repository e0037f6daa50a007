"""Demonstrations and rankings from the formats people have, with every problem located.

A source is a path:

- **JSON Lines** (``.jsonl``, ``.jsonl.gz``, ``.ndjson``, or ``.json`` holding one object a line):
  read by :mod:`instructgpt.data.jsonl`, so problems are ``file:line: field: reason``;
- anything the ``datasets`` library loads locally: a ``save_to_disk`` folder (its ``train``
  split, or its only split), ``.parquet`` (also recognised by its ``PAR1`` magic), ``.csv``,
  ``.arrow``, or ``.json`` holding one JSON array. Problems are ``file: row N: field: reason``
  with N the row's index (``dataset[N]``).

Anything else is refused in one line naming the file. A row's format is told from the fields
of the first row (so a file of another format gets one line, not one per row), after an
optional column mapping (``{"prompt": "question"}``: our ``prompt`` is the source's
``question``; problems name the source's column):

| kind | format | fields |
| --- | --- | --- |
| demonstrations | ours | ``prompt``, ``response`` |
| demonstrations | TRL prompt-completion | ``prompt``, ``completion`` (text, or messages: the assistant text is kept) |
| demonstrations | TRL conversational | ``messages``, the last one the assistant's (the response) |
| rankings | ours | ``prompt``, ``responses``, ``ranks`` |
| rankings | preference pairs | ``chosen``, ``rejected``, optional ``prompt`` (see ``importers.pair_parts``) |

Every format may carry ``labeler_id``, ``prompt_id`` and ``source``; ``labeler_id`` is optional.
Unusable preference pairs (empty or identical replies, no shared prompt; common in public
sets) are skipped and counted in a warning, as the importers do; any other bad row is an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from instructgpt.data.importers import PreferencePair, pair_parts
from instructgpt.data.jsonl import MAX_LINE_BYTES, DataError, Problem, collect, iter_objects, problems_from_error
from instructgpt.data.schemas import Demonstration, Message, Ranking

logger = logging.getLogger(__name__)

FORMATS: dict[str, dict[str, tuple[str, ...]]] = {
    "demonstrations": {
        "ours": ("prompt", "response"),
        "prompt-completion": ("prompt", "completion"),
        "messages": ("messages",),
    },
    "rankings": {"ours": ("responses", "ranks"), "pairs": ("chosen", "rejected")},
}
"""Each kind's row formats by name, with the fields that tell them apart (first match wins)."""

OUR_FIELDS = {"demonstrations": {"prompt", "response"}, "rankings": {"prompt", "responses", "ranks"}}
"""A first row matching no format but holding one of these is read as ours, so that each missing field is named."""

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
TABLE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow", ".json": "json"}
"""``datasets`` builders by file suffix."""
KNOWN = "JSON Lines, .json, .parquet, .csv, .arrow, or a datasets save_to_disk folder"

Row = tuple[int, dict] | Problem


def parse_columns(pairs: Sequence[str]) -> dict[str, str]:
    """``["prompt=question", "response=answer"]`` -> ``{"prompt": "question", "response": "answer"}``."""
    columns = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ValueError(f"column mapping {pair!r}: write OURS=THEIRS, e.g. prompt=question")
        columns[ours.strip()] = theirs.strip()
    return columns


def load_records(
    path: str | os.PathLike,
    kind: str,
    columns: Mapping[str, str] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list:
    """All ``kind`` records (``demonstrations`` or ``rankings``) of one source; raises DataError
    listing every problem."""
    return collect(iter_records(path, kind, columns, max_line_bytes))


def iter_records(
    path: str | os.PathLike,
    kind: str,
    columns: Mapping[str, str] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[BaseModel | Problem]:
    """Each row of a source as a ``Demonstration`` or ``Ranking``, or the Problems that stop it."""
    if kind not in FORMATS:
        raise ValueError(f"kind must be one of {sorted(FORMATS)}, got {kind!r}")
    name, columns, where = str(path), dict(columns or {}), location_unit(path)
    form, skipped = None, 0
    for item in iter_rows(path, max_line_bytes):
        if isinstance(item, Problem):
            yield item
            continue
        index, raw = item
        row = mapped(raw, columns)
        if form is None:
            form = _file_format(row, kind)
            if form is None:
                yield Problem(name, index, "-", _unknown_format(row, kind, columns), where)
                return
        try:
            record = _convert(row, kind, form)
        except ValidationError as e:
            yield from (_renamed(p, form, columns, where) for p in problems_from_error(name, index, e))
            continue
        if record is None:
            skipped += 1
        else:
            yield record
    if skipped:
        logger.warning("%s: skipped %d unusable pairs (empty or identical replies, or no shared prompt)", name, skipped)


def iter_rows(path: str | os.PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Row]:
    """``(line or row number, object)`` for each record of a source, and a Problem for each bad one."""
    p = Path(path)
    if _is_jsonl(p):
        yield from iter_objects(p, max_line_bytes)
    else:
        yield from _table_rows(p)


def row_format(row: Mapping[str, Any], kind: str) -> str | None:
    """The name of the ``kind`` format whose fields ``row`` has (``FORMATS``), or None."""
    for form, fields in FORMATS[kind].items():
        if all(f in row for f in fields):
            return form
    return None


def _file_format(row: Mapping[str, Any], kind: str) -> str | None:
    """The format of a file from its first row: the one whose fields it has; else ours when it holds one of our
    fields and looks like no other kind, so that each missing field gets named."""
    if form := row_format(row, kind):
        return form
    other_kind = any(row_format(row, k) for k in FORMATS if k != kind)
    return "ours" if set(row) & OUR_FIELDS[kind] and not other_kind else None


def location_unit(path: str | os.PathLike) -> str:
    """How a source's records are located: ``line`` (JSON Lines) or ``row`` (a table)."""
    return "line" if _is_jsonl(Path(path)) else "row"


def _is_jsonl(path: Path) -> bool:
    """JSON Lines: a file named so (unless it is parquet inside), or a ``.json`` file whose first non-blank
    byte is not ``[``. A folder never is."""
    if path.is_dir():
        return False
    head = _head(path, 4096)
    if head is None:  # missing or unreadable: the JSON Lines reader says so, when named so
        return path.name.endswith(JSONL_SUFFIXES)
    if head.startswith(b"PAR1"):
        return False
    if path.name.endswith(JSONL_SUFFIXES):
        return True
    return path.suffix == ".json" and not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _head(path: Path, size: int) -> bytes | None:
    """The first ``size`` bytes of a file; None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return None


def _builder(path: Path) -> str | None:
    """The ``datasets`` builder for a file: parquet by its magic bytes, else by its suffix."""
    if (_head(path, 4) or b"") == b"PAR1":
        return "parquet"
    return TABLE_BUILDERS.get(path.suffix)


def _table_rows(path: Path) -> Iterator[Row]:
    """Rows of a table or ``datasets`` folder as ``(index, dict)``; one whole-file Problem when it cannot be read."""
    try:
        dataset = _open_table(path)
    except DataError as e:
        yield from e.problems
        return
    if len(dataset) == 0:
        yield Problem(str(path), 0, "-", "no rows: no records")
    yield from enumerate(dataset)


def _open_table(path: Path) -> Any:
    """The ``datasets.Dataset`` at ``path``; DataError (one whole-file Problem) when there is none."""

    def fail(reason: str) -> DataError:
        return DataError([Problem(str(path), 0, "-", reason)])

    if not path.exists():
        raise fail("no such file")
    is_folder = path.is_dir()
    if is_folder and not any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        raise fail(f"a folder, but not one written by datasets' save_to_disk; formats read: {KNOWN}")
    builder = None if is_folder else _builder(path)
    if not is_folder and builder is None:
        raise fail(f"unsupported format {path.suffix or '(no suffix)'!r}; formats read: {KNOWN}")
    try:
        import datasets
    except ImportError:
        raise fail("reading this format needs the datasets package: pip install 'instructgpt[data]'") from None
    try:
        if not is_folder:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        loaded = datasets.load_from_disk(str(path))
        return _one_split(loaded, fail) if isinstance(loaded, datasets.DatasetDict) else loaded
    except DataError:
        raise
    except Exception as e:  # datasets and pyarrow raise many kinds; each is one line here
        what = "a datasets folder" if is_folder else builder
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise fail(f"cannot read as {what}: {first}") from None


def _one_split(loaded: Any, fail: Callable[[str], DataError]) -> Any:
    """A DatasetDict's ``train`` split, or its only one."""
    splits = list(loaded.keys())
    if "train" in splits:
        return loaded["train"]
    if len(splits) == 1:
        return loaded[splits[0]]
    raise fail(f"a dataset with splits {splits} and none named train: pass the split's own folder")


def mapped(row: dict, columns: Mapping[str, str]) -> dict:
    """The row with each source column renamed to our field; a missing column is kept absent (the
    record's validation then names it)."""
    if not columns:
        return row
    renamed = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs in row:
            renamed[ours] = row[theirs]
    return renamed


def _unknown_format(row: Mapping[str, Any], kind: str, columns: Mapping[str, str]) -> str:
    forms = "; ".join(f"{{{', '.join(fields)}}} ({form})" for form, fields in FORMATS[kind].items())
    missing = sorted(theirs for theirs in columns.values() if theirs not in row)
    hint = f"mapped columns {missing} not found; " if missing else ""
    other = next((k for k in FORMATS if k != kind and row_format(row, k)), None)
    hint += f"these look like {other}, not {kind}; " if other else ""
    return (
        f"{hint}cannot tell the {kind} format from the fields {sorted(row)}: expected {forms}; "
        "map other names with --columns OURS=THEIRS"
    )


_EXTRA = ("labeler_id", "prompt_id", "source")


class _Chat(BaseModel):
    """A TRL conversational record: the prompt turns, then the assistant's response."""

    model_config = ConfigDict(strict=True, extra="ignore")
    messages: Annotated[list[Message], Field(min_length=2)]

    @field_validator("messages")
    @classmethod
    def _ends_with_a_reply(cls, messages: list[Message]) -> list[Message]:
        if messages[-1].role != "assistant" or messages[-2].role != "user":
            raise ValueError("must end with a user message, then the assistant's (the response)")
        return messages


class _Completion(BaseModel):
    """A TRL completion: text, or messages whose assistant text is the response."""

    model_config = ConfigDict(strict=True, extra="ignore")
    completion: str | list[Message]

    def text(self) -> str:
        if isinstance(self.completion, str):
            return self.completion
        return "\n\n".join(m.content for m in self.completion if m.role == "assistant")


def _convert(row: dict, kind: str, form: str) -> BaseModel | None:
    """One row in format ``form`` as our record; None for an unusable pair; ValidationError when invalid."""
    extra = {k: row[k] for k in _EXTRA if row.get(k) is not None}
    if form == "ours":
        return (Ranking if kind == "rankings" else Demonstration).model_validate(row)
    if form == "pairs":
        parts = pair_parts(PreferencePair.model_validate(row))
        if parts is None:
            return None
        prompt, chosen, rejected = parts
        return Ranking.model_validate({**extra, "prompt": prompt, "responses": [chosen, rejected], "ranks": [0, 1]})
    if form == "prompt-completion":
        response = _Completion.model_validate(row).text()
        return Demonstration.model_validate({**extra, "prompt": row["prompt"], "response": response})
    messages = _Chat.model_validate(row).messages
    return Demonstration.model_validate({**extra, "prompt": messages[:-1], "response": messages[-1].content})


_SOURCE_NAMES = {"prompt-completion": {"response": "completion"}, "messages": {"response": "messages"}}


def _renamed(problem: Problem, form: str, back: Mapping[str, str], unit: str) -> Problem:
    """The Problem with its field named as in the source: the format's own name (``completion`` for our
    ``response``), then the mapped column."""
    head, dot, rest = problem.field.partition(".")
    head = _SOURCE_NAMES.get(form, {}).get(head, head)
    head = back.get(head, head)
    return Problem(problem.path, problem.line, head + dot + rest, problem.reason, unit)
