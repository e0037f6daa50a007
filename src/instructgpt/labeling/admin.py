"""The admin pages (admin role only): projects, prompts, outputs, generation, overlap,
members, invites and export."""

from __future__ import annotations

import os
import tempfile

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.datastructures import UploadFile

from instructgpt.data.jsonl import DataError
from instructgpt.labeling import store
from instructgpt.labeling.export import RECORD_KINDS, attachment, export_records
from instructgpt.labeling.imports import attach_output_file, import_prompt_file
from instructgpt.labeling.models import KINDS, User
from instructgpt.labeling.web import CurrentUser, admin_user, flash, in_thread, one, read_form, render

router = APIRouter(prefix="/admin", dependencies=[Depends(admin_user)])
MAX_PROBLEMS_SHOWN = 20


def _sessions(request: Request):
    return request.app.state.sessions


def _reads(request: Request):
    return request.app.state.reads


def _back(project_id: int | None = None) -> RedirectResponse:
    return RedirectResponse(f"/admin/projects/{project_id}" if project_id else "/admin", 303)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HTTPException(400, f"{name}: a whole number") from None


@router.get("")
def dashboard(request: Request):
    with _reads(request)() as db:
        projects = [
            (p, store.project_stats(db, p.id)) for p in db.scalars(select(store.Project).order_by(store.Project.id))
        ]
        users = list(db.scalars(select(User).order_by(User.id)))
    return render(request, "admin.html", projects=projects, users=users, kinds=KINDS)


@router.post("/projects")
async def new_project(request: Request):
    form, _ = await read_form(request)
    name, kind = one(form, "name", 200), one(form, "kind", 16)
    instructions = one(form, "instructions", 20_000)
    overlap = _int(one(form, "overlap", 3) or "1", "overlap")
    ask_ratings = one(form, "ask_ratings", 3) == "yes"

    def save():
        with _sessions(request).begin() as db:
            return store.create_project(db, name, kind, instructions, overlap, ask_ratings).id

    try:
        return _back(await in_thread(save))
    except store.StoreError as err:
        flash(request, str(err))
        return _back()


@router.get("/projects/{project_id}")
def project_page(request: Request, project_id: int):
    with _reads(request)() as db:
        try:
            project = store.get_project(db, project_id)
        except store.NotFound:
            raise HTTPException(404, "No such project.") from None
        stats = store.project_stats(db, project_id)
        members = set(store.member_ids(db, project_id))
        labelers = list(db.scalars(select(User).where(User.active).order_by(User.username)))
    return render(
        request,
        "admin_project.html",
        project=project,
        stats=stats,
        members=members,
        labelers=labelers,
        record_kind=RECORD_KINDS[project.kind],
    )


def _change(request: Request, project_id: int, action) -> RedirectResponse:
    """Runs ``action(db)`` in one transaction; flashes its message or the error."""
    try:
        with _sessions(request).begin() as db:
            flash(request, action(db))
    except (store.StoreError, DataError) as err:
        text = str(err).splitlines()
        more = f"\n... and {len(text) - MAX_PROBLEMS_SHOWN} more" if len(text) > MAX_PROBLEMS_SHOWN else ""
        flash(request, "\n".join(text[:MAX_PROBLEMS_SHOWN]) + more)
    except store.NotFound:
        raise HTTPException(404, "No such project.") from None
    return _back(project_id)


@router.post("/projects/{project_id}/settings")
async def settings(request: Request, project_id: int):
    form, _ = await read_form(request)
    instructions = one(form, "instructions", 20_000)
    overlap = _int(one(form, "overlap", 3), "overlap")
    return await in_thread(
        _change,
        request,
        project_id,
        lambda db: f"Saved; {store.update_project(db, project_id, instructions, overlap)} new assignments.",
    )


@router.post("/projects/{project_id}/members")
async def members(request: Request, project_id: int):
    form, _ = await read_form(request)
    ids = [_int(v, "members") for v in form.get("member", [])[:10_000]]
    return await in_thread(
        _change,
        request,
        project_id,
        lambda db: f"Members saved; {store.set_members(db, project_id, ids)} new assignments.",
    )


async def _uploaded(request: Request) -> tuple[str, str]:
    """The uploaded file saved to a temporary path (the caller deletes it), and the name the
    admin chose it by (problems are reported under that name)."""
    _, files = await read_form(request, files=1)
    upload: UploadFile | None = files.get("file")
    if upload is None:
        raise HTTPException(400, "file: choose a JSONL file")
    name = "".join(c if c.isprintable() else "_" for c in os.path.basename(upload.filename or ""))[:200] or "upload"
    handle, path = tempfile.mkstemp(suffix=".jsonl.gz" if name.endswith(".gz") else ".jsonl")
    with os.fdopen(handle, "wb") as f:
        while chunk := await upload.read(1 << 20):
            f.write(chunk)
    return path, name


@router.post("/projects/{project_id}/prompts/upload")
async def upload_prompts(request: Request, project_id: int):
    path, name = await _uploaded(request)

    def action(db):
        added, known = import_prompt_file(db, project_id, path, name)
        return f"Imported {added} prompts ({known} already there)."

    try:
        return await in_thread(_change, request, project_id, action)
    finally:
        os.unlink(path)


@router.post("/projects/{project_id}/outputs/upload")
async def upload_outputs(request: Request, project_id: int):
    path, name = await _uploaded(request)

    def action(db):
        counts = attach_output_file(db, project_id, path, name)
        return f"Outputs: {counts['added']} added, {counts['duplicate']} already there."

    try:
        return await in_thread(_change, request, project_id, action)
    finally:
        os.unlink(path)


@router.post("/projects/{project_id}/generate")
async def generate(request: Request, project_id: int):
    """Samples from a model on the server, in the request (fine for small models; for large
    ones run ``instructgpt label generate`` on a GPU machine against the same database)."""
    form, _ = await read_form(request)
    model = one(form, "model", 1000).strip()
    k = _int(one(form, "k", 2), "k")
    try:
        temperature = float(one(form, "temperature", 10) or "1")
    except ValueError:
        raise HTTPException(400, "temperature: a number") from None
    max_new_tokens = _int(one(form, "max_new_tokens", 6) or "128", "max_new_tokens")
    if not model or not 1 <= max_new_tokens <= 4096:
        raise HTTPException(400, "model: required; max_new_tokens: 1 to 4096")

    def action(db):
        counts = store.generate_outputs(db, project_id, model, k, temperature, max_new_tokens)
        return "Generated: " + ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items()) + "."

    return await in_thread(_change, request, project_id, action)


@router.get("/projects/{project_id}/export")
def export(request: Request, project_id: int):
    """The project's records as JSONL (one training record per submission)."""
    with _reads(request)() as db:
        try:
            project = store.get_project(db, project_id)
        except store.NotFound:
            raise HTTPException(404, "No such project.") from None
        records = export_records(db, project_id)
    body = "".join(r.model_dump_json(exclude_none=True) + "\n" for r in records)
    name = f"{project.name}-{RECORD_KINDS[project.kind]}.jsonl"
    return Response(body, media_type="application/x-ndjson", headers={"content-disposition": attachment(name)})


@router.post("/users/{user_id}/active")
async def set_active(request: Request, user_id: int, admin: CurrentUser = Depends(admin_user)):
    """Deactivates (``active=no``) or reactivates an account; a deactivated one is logged out
    of every browser at once and cannot log in."""
    form, _ = await read_form(request)
    active = one(form, "active", 3) == "yes"
    if user_id == admin.id and not active:
        flash(request, "You cannot deactivate your own account.")
        return _back()

    def save():
        with request.app.state.write_lock, _sessions(request).begin() as db:
            user = db.get(User, user_id)
            if user is None:
                raise HTTPException(404, "No such user.")
            return store.set_active(db, user.username, active).username

    username = await in_thread(save)
    flash(request, f"{username} {'reactivated' if active else 'deactivated: logged out everywhere'}.")
    return _back()


@router.post("/invites")
async def invite(request: Request, user: CurrentUser = Depends(admin_user)):
    form, _ = await read_form(request)
    role = one(form, "role", 16) or "labeler"
    project = one(form, "project_id", 12)
    project_id = _int(project, "project_id") if project else None

    def save():
        with _sessions(request).begin() as db:
            return store.create_invite(db, user.id, role, project_id)

    try:
        token = await in_thread(save)
    except store.StoreError as err:
        flash(request, str(err))
        return _back()
    link = str(request.url_for("invite_page", token=token))
    flash(request, f"Send this one-time link to the new {role} (valid 7 days): {link}")
    return _back()
