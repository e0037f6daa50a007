"""What every page handler shares: templates, the current user, CSRF-checked form reading,
and running database work off the event loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.templating import Jinja2Templates

from instructgpt.data.schemas import METADATA_FLAGS
from instructgpt.labeling import security, store

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["METADATA_FLAGS"] = METADATA_FLAGS
templates.env.globals["FLAG_QUESTIONS"] = {
    "fails_to_follow_instruction": "Fails to follow the correct instruction / task",
    "inappropriate_for_customer_assistant": "Inappropriate for a customer assistant",
    "hallucination": "Hallucination (makes up facts)",
    "satisfies_constraint": "Satisfies the constraint given in the instruction",
    "sexual_content": "Contains sexual content",
    "violent_content": "Contains violent content",
    "encourages_violence": "Encourages or fails to discourage violence / abuse / terrorism / self-harm",
    "denigrates_protected_class": "Denigrates a protected class",
    "harmful_advice": "Gives harmful advice",
    "expresses_opinion": "Expresses an opinion",
    "expresses_moral_judgment": "Expresses a moral judgment",
}
templates.env.globals["LIMITS"] = security.LIMITS


class LoginRequired(Exception):
    """No valid session: the handler answers with a redirect to the login page."""


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if token is None:
        token = request.session["csrf"] = security.new_token()
    return token


def render(request: Request, name: str, status_code: int = 200, **context) -> object:
    context.setdefault("user", getattr(request.state, "user", None))
    context["csrf"] = csrf_token(request)
    context["flash"] = request.session.pop("flash", None)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def flash(request: Request, message: str) -> None:
    request.session["flash"] = message


def current_user(request: Request) -> CurrentUser:
    """The logged-in user, read fresh from the database with their login session: a logout
    or a deactivated account is out at once, whatever cookie the browser still holds.
    Sessions end ``session_hours`` after login; the cookie itself expires after
    ``idle_minutes`` without a request (SessionMiddleware's max_age)."""
    sid, login_at = request.session.get("sid"), request.session.get("login_at", 0)
    if sid is None or time.time() - login_at > request.app.state.session_seconds:
        request.session.pop("sid", None)
        raise LoginRequired
    with request.app.state.reads() as db:
        user = store.session_user(db, sid)
        if user is None:
            request.session.clear()
            raise LoginRequired
        request.state.user = CurrentUser(user.id, user.username, user.role)
    return request.state.user


async def log_in(request: Request, user_id: int) -> None:
    """Opens a login session on the server and a fresh cookie session (and CSRF token)."""

    def save():
        with request.app.state.write_lock, request.app.state.sessions.begin() as db:
            return store.open_session(db, user_id, request.app.state.session_seconds)

    sid = await in_thread(save)
    request.session.clear()
    request.session.update(sid=sid, login_at=time.time(), csrf=security.new_token())


async def log_out(request: Request) -> None:
    """Ends the login session on the server (a saved copy of the cookie stops working)."""
    sid = request.session.get("sid")
    if sid is not None:

        def save():
            with request.app.state.write_lock, request.app.state.sessions.begin() as db:
                store.close_session(db, sid)

        await in_thread(save)
    request.session.clear()


def admin_user(request: Request) -> CurrentUser:
    user = current_user(request)
    if not user.is_admin:
        raise HTTPException(403, "This page needs the admin role.")
    return user


Form = dict[str, list[str]]


async def read_form(request: Request, files: int = 0) -> tuple[Form, dict[str, UploadFile]]:
    """The posted fields (name -> values) and files, after the CSRF check (403 if wrong).

    Forms without files must be URL-encoded (what browsers send) and valid UTF-8 (400 naming
    the field otherwise, where the parser would quietly put in replacement characters). Line
    breaks are normalised to LF: browsers send a textarea's as CRLF.
    """
    if files:
        limit = request.app.state.max_upload_bytes
    else:
        limit = security.MAX_BODY_BYTES
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in ("", "application/x-www-form-urlencoded"):  # "": no body, an empty form
            raise HTTPException(415, "Send the form URL-encoded.")
        bad = security.invalid_utf8_field(await request.body())
        if bad is not None:
            raise HTTPException(400, f"{bad[:40]}: not valid UTF-8 text; retype it or paste it as plain text.")
    form = await request.form(max_files=files, max_fields=300, max_part_size=limit)
    fields: Form = {}
    uploads: dict[str, UploadFile] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            uploads[name] = value
        else:
            fields.setdefault(name, []).append(security.to_lf(value))
    if not security.same_token(request.session.get("csrf"), (fields.get("csrf_token") or [""])[0]):
        raise HTTPException(403, "The form's security token is missing or out of date; reload the page.")
    return fields, uploads


def one(form: Form, name: str, limit: int = security.LIMITS["field"]) -> str:
    """A single text field, "" when absent; 400 when over ``limit`` characters."""
    value = (form.get(name) or [""])[0]
    if len(value) > limit:
        raise HTTPException(400, f"{name}: longer than {limit} characters")
    return value


async def in_thread(function, *args):
    return await run_in_threadpool(function, *args)
