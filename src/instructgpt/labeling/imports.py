"""Prompt and output files -> a project's items and outputs, every refusal as ``file:line``.

Files are read line by line with their line numbers (``instructgpt.data.jsonl``), under the
name the admin knows the file by (the uploaded file's name, not the server's temporary copy).
A file is taken whole or not at all: any problem raises ``DataError`` listing each one, and
the caller's transaction rolls back. Refused: a malformed line, a text over its size limit
(``security.LIMITS``), an output for an unknown prompt id, one more output than a board holds,
an output equal to another of its prompt up to case and spacing, and a new output for a prompt
already being labeled. An output identical to one already stored is skipped (a re-run).
"""

from __future__ import annotations

import dataclasses
import os

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from instructgpt.data.jsonl import DataError, Problem, iter_objects, problems_from_error
from instructgpt.data.schemas import Prompt
from instructgpt.labeling import store
from instructgpt.labeling.security import LIMITS

_SIZES = {
    Prompt: {"id": LIMITS["prompt_id"], "text": LIMITS["prompt"]},
    store.OutputRecord: {"response": LIMITS["output"], "model": LIMITS["model"]},
}
_REFUSED = {
    "unknown_prompt": ("prompt_id", "no prompt {id!r} in this project"),
    "full": ("prompt_id", "prompt {id!r} already has the most outputs a task shows ({limit})"),
    "near_duplicate": ("response", "the same as another output of prompt {id!r} up to case and spacing"),
    "frozen": ("prompt_id", "prompt {id!r} is already being labeled: its outputs can no longer change"),
}


def read_numbered(
    path: str | os.PathLike, model: type[BaseModel], name: str | None = None
) -> list[tuple[int, BaseModel]]:
    """``(line, record)`` for each line of the file validated as ``model`` and within the size
    limits; raises DataError listing every problem as ``name:line: field: reason``."""
    name = name or str(path)
    records, problems = [], []
    for item in iter_objects(path):
        if isinstance(item, Problem):
            problems.append(dataclasses.replace(item, path=name))
            continue
        line, value = item
        try:
            record = model.model_validate(value)
        except ValidationError as err:
            problems += problems_from_error(name, line, err)
            continue
        too_long = [
            Problem(name, line, field, f"longer than {limit:,} characters")
            for field, limit in _SIZES.get(model, {}).items()
            if len(getattr(record, field) or "") > limit
        ]
        problems += too_long
        if not too_long:
            records.append((line, record))
    if problems:
        raise DataError(problems)
    return records


def import_prompt_file(
    session: Session, project_id: int, path: str | os.PathLike, name: str | None = None
) -> tuple[int, int]:
    """Adds a prompts file's prompts as items; returns (added, already there by id)."""
    prompts = [prompt for _, prompt in read_numbered(path, Prompt, name)]
    return store.import_prompts(session, project_id, prompts)


def attach_output_file(
    session: Session, project_id: int, path: str | os.PathLike, name: str | None = None
) -> dict[str, int]:
    """Attaches an outputs file's outputs (``prompt_id``, ``response``, ``model``); returns
    the counts ``added`` and ``duplicate`` (already stored). Raises DataError, naming each
    line, if any output would be refused (see the module docstring)."""
    numbered = read_numbered(path, store.OutputRecord, name)
    outcomes = store.place_outputs(session, project_id, [record for _, record in numbered])
    limit = 2 if store.get_project(session, project_id).kind == "comparison" else store.MAX_OUTPUTS
    problems = [
        Problem(
            name or str(path),
            line,
            _REFUSED[outcome][0],
            _REFUSED[outcome][1].format(id=record.prompt_id[:40], limit=limit),
        )
        for (line, record), outcome in zip(numbered, outcomes)
        if outcome in _REFUSED
    ]
    if problems:
        raise DataError(problems)
    return {"added": outcomes.count("added"), "duplicate": outcomes.count("duplicate")}
