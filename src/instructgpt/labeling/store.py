"""Every read and write of the labeling database, each the body of one transaction.

Functions take an open ``Session`` inside ``sessions.begin()`` (the caller commits); they
never commit themselves, except ``submit``, which must tell a duplicate from a conflict.

Assignment is eager: ``assign_items`` gives each ready item (a prompt for demonstrations,
2..9 outputs for rankings, exactly 2 for comparisons) to ``overlap`` distinct project members,
least-loaded first, and is re-run whenever prompts, outputs, members or the overlap change.
A labeler's progress ("3 / 11") is their finished assignments over all of theirs. An item's
outputs are frozen once it is assigned, so every labeler of an item sees the same outputs.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from instructgpt.data.schemas import Id, Prompt, Text
from instructgpt.labeling import security
from instructgpt.labeling.answers import Form, parse_answer, to_record
from instructgpt.labeling.models import (
    KINDS,
    ROLES,
    Assignment,
    Invite,
    Item,
    LoginSession,
    Member,
    Output,
    Project,
    Submission,
    User,
    utcnow,
)

MAX_OUTPUTS = 9
"""Largest K of a ranking board (the paper ranks 4 to 9 outputs)."""
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class StoreError(ValueError):
    """Bad input from a person (shown to them as is)."""


class NotFound(LookupError):
    """No such row, or not one this user may see (the two are never told apart)."""


class AlreadyDone(StoreError):
    """The assignment already has a different submission (or was skipped)."""


class OutputRecord(BaseModel):
    """One line of an outputs file: a model's output for a prompt of the project.

    Demonstration files fit too (``prompt_id`` and ``response``; other fields are ignored).
    """

    model_config = ConfigDict(strict=True, extra="ignore")
    prompt_id: Id
    response: Text
    model: str | None = None


# -- people ---------------------------------------------------------------------------------


def create_user(session: Session, username: str, password: str, role: str) -> User:
    if not _USERNAME.match(username):
        raise StoreError("username: 1-64 letters, digits or . _ - @")
    if role not in ROLES:
        raise StoreError(f"role: one of {', '.join(ROLES)}")
    if not security.MIN_PASSWORD <= len(password) <= security.LIMITS["password"]:
        raise StoreError(f"password: {security.MIN_PASSWORD} to {security.LIMITS['password']} characters")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise StoreError(f"username: {username!r} is taken")
    user = User(username=username, password_hash=security.hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def password_hash(session: Session, username: str) -> tuple[int, str] | None:
    """The id and password hash of an active user, or None."""
    row = session.execute(
        select(User.id, User.password_hash).where(User.username == username[:64], User.active)
    ).first()
    return None if row is None else (row[0], row[1])


def check_password(found: tuple[int, str] | None, password: str) -> int | None:
    """The user id when ``password`` matches; run it outside any transaction (it is slow on
    purpose). An unknown user costs the same time as a wrong password."""
    if found is None:
        security.burn_verify(password[:1024])
        return None
    return found[0] if security.verify_password(found[1], password[:1024]) else None


def authenticate(session: Session, username: str, password: str) -> int | None:
    """The id of the user with this username and password, or None."""
    return check_password(password_hash(session, username), password)


def open_session(session: Session, user_id: int, max_age_seconds: float) -> str:
    """A new login session of the user; returns its token (the cookie's), stores its hash.
    Sessions older than ``max_age_seconds`` are deleted on the way."""
    session.execute(delete(LoginSession).where(LoginSession.created_at < utcnow() - timedelta(seconds=max_age_seconds)))
    token = security.new_token()
    session.add(LoginSession(token_hash=security.token_hash(token), user_id=user_id))
    return token


def session_user(session: Session, token: str) -> User | None:
    """The active user of a login session that was not closed, or None."""
    return session.scalar(
        select(User)
        .join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == security.token_hash(token[:100]), User.active)
    )


def close_session(session: Session, token: str) -> None:
    session.execute(delete(LoginSession).where(LoginSession.token_hash == security.token_hash(token[:100])))


def set_active(session: Session, username: str, active: bool) -> User:
    """Activates or deactivates an account; deactivating also ends its login sessions, so the
    next request from any of its browsers goes to the login page."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise StoreError(f"no user named {username!r}")
    user.active = active
    if not active:
        session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    return user


def create_invite(
    session: Session, admin_id: int, role: str = "labeler", project_id: int | None = None, days: float = 7.0
) -> str:
    """A one-time sign-up token (returned once; only its hash is stored)."""
    if role not in ROLES:
        raise StoreError(f"role: one of {', '.join(ROLES)}")
    token = security.new_token()
    session.add(
        Invite(
            token_hash=security.token_hash(token),
            role=role,
            project_id=project_id,
            created_by=admin_id,
            expires_at=utcnow() + timedelta(days=days),
        )
    )
    return token


def open_invite(session: Session, token: str) -> Invite:
    invite = session.scalar(select(Invite).where(Invite.token_hash == security.token_hash(token[:100])))
    if invite is None or invite.used_by is not None or _aware(invite.expires_at) < utcnow():
        raise NotFound("invite")
    return invite


def accept_invite(session: Session, token: str, username: str, password: str) -> User:
    invite = open_invite(session, token)
    user = create_user(session, username, password, invite.role)
    claimed = session.execute(
        update(Invite).where(Invite.id == invite.id, Invite.used_by.is_(None)).values(used_by=user.id)
    )
    if claimed.rowcount != 1:
        raise NotFound("invite")
    if invite.project_id is not None:
        set_members(session, invite.project_id, [*member_ids(session, invite.project_id), user.id])
    return user


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- projects -------------------------------------------------------------------------------


def create_project(
    session: Session, name: str, kind: str, instructions: str = "", overlap: int = 1, ask_ratings: bool = True
) -> Project:
    name = name.strip()
    if not 1 <= len(name) <= security.LIMITS["project_name"]:
        raise StoreError(f"name: 1 to {security.LIMITS['project_name']} characters")
    if not name.isprintable():
        raise StoreError("name: one line, without control characters")
    if kind not in KINDS:
        raise StoreError(f"kind: one of {', '.join(KINDS)}")
    _check_settings(instructions, overlap)
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise StoreError(f"name: a project {name!r} exists")
    project = Project(name=name, kind=kind, instructions=instructions, overlap=overlap, ask_ratings=ask_ratings)
    session.add(project)
    session.flush()
    return project


def _check_settings(instructions: str, overlap: int) -> None:
    if len(instructions) > security.LIMITS["instructions"]:
        raise StoreError(f"instructions: longer than {security.LIMITS['instructions']} characters")
    if not 1 <= overlap <= 100:
        raise StoreError("overlap: 1 to 100 labelers per item")


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("project")
    return project


def find_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise StoreError(f"no project named {name!r}")
    return project


def update_project(session: Session, project_id: int, instructions: str, overlap: int) -> int:
    """Changes the instructions and overlap; returns the number of new assignments."""
    _check_settings(instructions, overlap)
    project = get_project(session, project_id)
    project.instructions, project.overlap = instructions, overlap
    return assign_items(session, project_id)


def member_ids(session: Session, project_id: int) -> list[int]:
    return list(session.scalars(select(Member.user_id).where(Member.project_id == project_id)))


def set_members(session: Session, project_id: int, user_ids: list[int]) -> int:
    """Makes exactly ``user_ids`` the project's labelers; returns the new assignments. A
    removed labeler keeps their finished work; their pending items stay theirs until re-added."""
    get_project(session, project_id)
    wanted = set(user_ids)
    known = set(session.scalars(select(User.id).where(User.id.in_(wanted), User.active)))
    if known != wanted:
        raise StoreError("members: unknown user")
    current = set(member_ids(session, project_id))
    for user_id in wanted - current:
        session.add(Member(project_id=project_id, user_id=user_id))
    for user_id in current - wanted:
        session.delete(session.get(Member, (project_id, user_id)))
    session.flush()
    return assign_items(session, project_id)


def import_prompts(session: Session, project_id: int, prompts: list[Prompt]) -> tuple[int, int]:
    """Adds the prompts as items (line breaks as LF); returns (added, already there by id).
    ``imports.import_prompt_file`` checks each line's sizes first."""
    get_project(session, project_id)
    existing = set(session.scalars(select(Item.prompt_id).where(Item.project_id == project_id)))
    added = 0
    for prompt in prompts:
        if len(prompt.id) > security.LIMITS["prompt_id"] or len(prompt.text) > security.LIMITS["prompt"]:
            raise StoreError(f"prompt {prompt.id[:40]!r}: id or text too long")
        if prompt.id in existing:
            continue
        existing.add(prompt.id)
        session.add(Item(project_id=project_id, prompt_id=prompt.id, prompt=security.to_lf(prompt.text)))
        added += 1
    session.flush()
    assign_items(session, project_id)
    return added, len(prompts) - added


def _frozen_items(session: Session, project_id: int) -> set[int]:
    return set(session.scalars(select(Assignment.item_id).join(Item).where(Item.project_id == project_id)))


def near_duplicate_key(text: str) -> str:
    """Outputs equal up to case and spacing (``same``, ``Same``, ``same ``) share this key;
    two of them on one board would ask the labeler to rank a tie they cannot see."""
    return " ".join(text.split()).casefold()


OUTPUT_OUTCOMES = ("added", "duplicate", "near_duplicate", "unknown_prompt", "frozen", "full")
"""What ``place_outputs`` did with each output: stored; ``duplicate``: the same text is there
already (a re-run); ``near_duplicate``: equal to another output of the prompt up to case and
spacing; ``unknown_prompt``; ``frozen``: the item is assigned, its outputs fixed; ``full``: the
item has its maximum of outputs. Only ``added`` is stored."""


def place_outputs(session: Session, project_id: int, outputs: list[OutputRecord]) -> list[str]:
    """Adds outputs to the items with their prompt ids (text with LF line breaks); returns the
    outcome of each, one of ``OUTPUT_OUTCOMES``."""
    project = get_project(session, project_id)
    limit = 2 if project.kind == "comparison" else MAX_OUTPUTS
    items = {i.prompt_id: i for i in session.scalars(select(Item).where(Item.project_id == project_id))}
    texts: dict[int, list[str]] = {}
    for output in session.scalars(
        select(Output).join(Item).where(Item.project_id == project_id).order_by(Output.position)
    ):
        texts.setdefault(output.item_id, []).append(output.text)
    frozen = _frozen_items(session, project_id)
    outcomes = []
    for record in outputs:
        item = items.get(record.prompt_id)
        if len(record.response) > security.LIMITS["output"] or len(record.model or "") > security.LIMITS["model"]:
            raise StoreError(f"output for {record.prompt_id[:40]!r}: text or model name too long")
        text = security.to_lf(record.response)
        have = texts.setdefault(item.id, []) if item else []
        outcome = (
            "unknown_prompt"
            if item is None
            else "duplicate"
            if text in have
            else "near_duplicate"
            if near_duplicate_key(text) in {near_duplicate_key(t) for t in have}
            else "frozen"
            if item.id in frozen
            else "full"
            if len(have) >= limit
            else "added"
        )
        outcomes.append(outcome)
        if outcome == "added":
            session.add(Output(item_id=item.id, position=len(have), text=text, model=record.model))
            have.append(text)
    session.flush()
    assign_items(session, project_id)
    return outcomes


def attach_outputs(session: Session, project_id: int, outputs: list[OutputRecord]) -> dict[str, int]:
    """``place_outputs``, counted: ``{"added": n, ...}`` (only the outcomes that occurred)."""
    counts = Counter({"added": 0})
    counts.update(place_outputs(session, project_id, outputs))
    return dict(counts)


def generate_outputs(
    session: Session,
    project_id: int,
    model_path: str,
    k: int,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
    seed: int = 0,
    model_name: str | None = None,
) -> dict[str, int]:
    """Asks a model for ``k`` samples per prompt (temperature > 0) on the items not yet assigned
    and attaches them (identical or near-identical samples are kept once)."""
    if temperature <= 0 or not 1 <= k <= MAX_OUTPUTS:
        raise StoreError(f"generate: temperature > 0 and 1 <= k <= {MAX_OUTPUTS}")
    from instructgpt.models.generate import generate
    from instructgpt.models.loader import load_model

    frozen = _frozen_items(session, project_id)
    items = [
        i
        for i in session.scalars(select(Item).where(Item.project_id == project_id).order_by(Item.id))
        if i.id not in frozen
    ]
    if not items:
        return {"added": 0}
    model, tokenizer = load_model(model_path)
    records = []
    for sample in range(k):
        texts = generate(
            model,
            tokenizer,
            [i.prompt for i in items],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed + sample,
        )
        records += [
            OutputRecord(prompt_id=i.prompt_id, response=t, model=model_name or str(model_path))
            for i, t in zip(items, texts)
            if t.strip()
        ]
    return attach_outputs(session, project_id, records)


def _ready(kind: str, outputs: int) -> bool:
    return kind == "demonstration" or (kind == "ranking" and outputs >= 2) or (kind == "comparison" and outputs == 2)


def assign_items(session: Session, project_id: int) -> int:
    """Gives each ready item to ``overlap`` distinct members, least-loaded member first.
    Returns the number of assignments made."""
    project = get_project(session, project_id)
    members = member_ids(session, project_id)
    if not members:
        return 0
    outputs = Counter(
        dict(
            session.execute(
                select(Output.item_id, func.count())
                .join(Item)
                .where(Item.project_id == project_id)
                .group_by(Output.item_id)
            ).all()
        )
    )
    holders: dict[int, set[int]] = {}
    for item_id, user_id in session.execute(
        select(Assignment.item_id, Assignment.user_id).join(Item).where(Item.project_id == project_id)
    ):
        holders.setdefault(item_id, set()).add(user_id)
    load = Counter({m: 0 for m in members})
    for users in holders.values():
        load.update(u for u in users if u in load)
    made = 0
    for item_id in session.scalars(select(Item.id).where(Item.project_id == project_id).order_by(Item.id)):
        have = holders.get(item_id, set())
        if len(have) >= project.overlap or not _ready(project.kind, outputs[item_id]):
            continue
        free = sorted((m for m in members if m not in have), key=lambda m: (load[m], m))
        for user_id in free[: project.overlap - len(have)]:
            session.add(Assignment(item_id=item_id, user_id=user_id, swap=bool(secrets.randbits(1))))
            load[user_id] += 1
            made += 1
    session.flush()
    return made


# -- labeling -------------------------------------------------------------------------------


@dataclass
class Progress:
    project: Project
    done: int
    """Submitted or skipped."""
    total: int


def progress(session: Session, user_id: int, project_id: int | None = None) -> list[Progress]:
    """The user's projects (those with assignments of theirs or where they are a member)."""
    rows = session.execute(
        select(Item.project_id, Assignment.status, func.count())
        .join(Item)
        .where(Assignment.user_id == user_id)
        .group_by(Item.project_id, Assignment.status)
    )
    counts: dict[int, Counter] = {}
    for pid, status, n in rows:
        counts.setdefault(pid, Counter())[status] += n
    ids = set(counts) | set(session.scalars(select(Member.project_id).where(Member.user_id == user_id)))
    if project_id is not None:
        ids &= {project_id}
    projects = session.scalars(select(Project).where(Project.id.in_(ids)).order_by(Project.id))
    return [
        Progress(
            p,
            counts.get(p.id, Counter())["done"] + counts.get(p.id, Counter())["skipped"],
            sum(counts.get(p.id, Counter()).values()),
        )
        for p in projects
    ]


def next_assignment(session: Session, user_id: int, project_id: int) -> int | None:
    return session.scalar(
        select(Assignment.id)
        .join(Item)
        .where(Assignment.user_id == user_id, Item.project_id == project_id, Assignment.status == "pending")
        .order_by(Assignment.id)
        .limit(1)
    )


@dataclass
class Task:
    """Everything a task page shows, for its own labeler only."""

    assignment: Assignment
    item: Item
    project: Project
    outputs: list[Output]
    """In display order (comparisons: swapped when ``assignment.swap``)."""
    progress: Progress | None
    """The labeler's progress in the project (None when not asked for)."""


def load_task(session: Session, user_id: int, assignment_id: int, with_progress: bool = True) -> Task:
    """The task of one of the user's assignments; NotFound for anybody else's."""
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.user_id != user_id:
        raise NotFound("task")
    item = session.get(Item, assignment.item_id)
    project = session.get(Project, item.project_id)
    outputs = list(session.scalars(select(Output).where(Output.item_id == item.id).order_by(Output.position)))
    if project.kind == "comparison" and assignment.swap:
        outputs.reverse()
    return Task(
        assignment, item, project, outputs, progress(session, user_id, project.id)[0] if with_progress else None
    )


def check_answer(session: Session, user_id: int, username: str, assignment_id: int, form: Form) -> tuple[dict, int]:
    """The answer a form gives for one of the user's assignments, checked against the export
    schema, and the project id. Raises AnswerError on bad input, NotFound for anybody else's
    assignment. Reads only."""
    task = load_task(session, user_id, assignment_id, with_progress=False)
    answer = parse_answer(task.project.kind, form, len(task.outputs), task.project.ask_ratings)
    stored = sorted(task.outputs, key=lambda o: o.position)
    to_record(
        task.project.kind,
        task.item.prompt,
        task.item.prompt_id,
        [(o.text, o.model) for o in stored],
        task.assignment.swap,
        answer,
        username,
        f"labeling:{task.project.name}",
    )  # raises if invalid
    return answer, task.project.id


def store_answer(session: Session, user_id: int, assignment_id: int, key: str, answer: dict) -> str:
    """Stores a checked answer once, in one short transaction, and commits. Returns ``stored``,
    or ``duplicate`` when this idempotency key was already stored for this assignment (a double
    click or a retry: nothing is written). Raises AlreadyDone when the assignment was answered
    or skipped with another key (or the key was used for another task)."""
    if not _KEY.match(key or ""):
        raise StoreError("idempotency key: missing or malformed; reload the page")
    seen = session.scalar(select(Submission).where(Submission.idempotency_key == key))
    if seen is not None:
        session.rollback()
        return _replay(seen, user_id, assignment_id)
    claimed = session.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id, Assignment.user_id == user_id, Assignment.status == "pending")
        .values(status="done")
    )
    if claimed.rowcount != 1:  # answered meanwhile: by this very key (a concurrent retry) or not
        seen = session.scalar(select(Submission).where(Submission.idempotency_key == key))
        session.rollback()
        if seen is not None:
            return _replay(seen, user_id, assignment_id)
        raise AlreadyDone("this task was already submitted or skipped")
    session.add(
        Submission(
            assignment_id=assignment_id,
            user_id=user_id,
            idempotency_key=key,
            answer=json.dumps(answer, ensure_ascii=False),
        )
    )
    try:
        session.commit()
    except IntegrityError:  # the same key committed by a concurrent request in between
        session.rollback()
        seen = session.scalar(select(Submission).where(Submission.idempotency_key == key))
        session.rollback()
        if seen is None:
            raise AlreadyDone("this task was already submitted") from None
        return _replay(seen, user_id, assignment_id)
    return "stored"


def submit(session: Session, user_id: int, username: str, assignment_id: int, key: str, form: Form) -> str:
    """``check_answer`` then ``store_answer`` (the app runs the check in a read-only session
    first, so that the write transaction stays short)."""
    answer, _ = check_answer(session, user_id, username, assignment_id, form)
    session.rollback()
    return store_answer(session, user_id, assignment_id, key, answer)


def _replay(seen: Submission, user_id: int, assignment_id: int) -> str:
    if seen.user_id != user_id or seen.assignment_id != assignment_id:
        raise AlreadyDone("this form was already used for another task; reload the page")
    return "duplicate"


def skip(session: Session, user_id: int, assignment_id: int) -> None:
    load_task(session, user_id, assignment_id)  # NotFound for anybody else's
    session.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id, Assignment.status == "pending")
        .values(status="skipped")
    )


def project_stats(session: Session, project_id: int) -> dict[str, int]:
    items = session.scalar(select(func.count()).select_from(Item).where(Item.project_id == project_id))
    rows = dict(
        session.execute(
            select(Assignment.status, func.count())
            .join(Item)
            .where(Item.project_id == project_id)
            .group_by(Assignment.status)
        ).all()
    )
    outputs = session.scalar(select(func.count()).select_from(Output).join(Item).where(Item.project_id == project_id))
    return {"items": items, "outputs": outputs, **{s: rows.get(s, 0) for s in ("pending", "done", "skipped")}}
