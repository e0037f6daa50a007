"""Submissions -> training records: demonstrations (SFT JSONL), rankings (RM JSONL, labeler
ids and ties kept) and comparisons (win-rate records), in submission order. Skipped
assignments export nothing. ``labeler_id`` is the labeler's username."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from instructgpt.data.jsonl import write_jsonl_atomic
from instructgpt.labeling.answers import to_record
from instructgpt.labeling.models import Assignment, Item, Output, Submission, User
from instructgpt.labeling.store import get_project

RECORD_KINDS = {"demonstration": "demonstrations", "ranking": "rankings", "comparison": "comparisons"}
"""Project kind -> the record kind ``instructgpt data validate --kind`` checks."""


def export_records(session: Session, project_id: int) -> list[BaseModel]:
    project = get_project(session, project_id)
    outputs: dict[int, list[tuple[str, str | None]]] = {}
    for output in session.scalars(
        select(Output).join(Item).where(Item.project_id == project_id).order_by(Output.item_id, Output.position)
    ):
        outputs.setdefault(output.item_id, []).append((output.text, output.model))
    rows = session.execute(
        select(Submission.answer, Assignment.swap, Item, User.username)
        .join(Assignment, Submission.assignment_id == Assignment.id)
        .join(Item, Assignment.item_id == Item.id)
        .join(User, Submission.user_id == User.id)
        .where(Item.project_id == project_id)
        .order_by(Submission.id)
    )
    return [
        to_record(
            project.kind,
            item.prompt,
            item.prompt_id,
            outputs.get(item.id, []),
            swap,
            json.loads(answer),
            username,
            f"labeling:{project.name}",
        )
        for answer, swap, item, username in rows
    ]


def export_file(session: Session, project_id: int, path: str | Path) -> int:
    """Writes the project's records to ``path`` atomically; returns how many."""
    records = export_records(session, project_id)
    write_jsonl_atomic(path, records)
    return len(records)


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` value for a download named ``filename`` (RFC 6266): an ASCII
    ``filename`` for old clients and the exact name as ``filename*`` (UTF-8, percent-encoded,
    RFC 8187). Control characters (a line break would split the header) become ``_``.

    Example: ``attachment("Отчёт 1.jsonl")`` ->
    ``attachment; filename="______1.jsonl"; filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82%201.jsonl``.
    """
    name = "".join(c if c.isprintable() else "_" for c in filename)
    fallback = "".join(c if c.isascii() and c.isalnum() or c in "-._" else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
