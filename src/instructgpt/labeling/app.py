"""The web application: ``create_app`` and the labeler's pages (login, task list, one task
screen per kind, submit, skip, invites). The admin pages are in ``admin``.

Pages are rendered on the server (Jinja2) with a little JavaScript for the ranking board, which
also works without it (each output has a rank menu). POST handlers read the form, check the
CSRF token, then do their database work in a thread pool, one transaction each.
"""

from __future__ import annotations

import contextlib
import threading

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from instructgpt.labeling import db as database
from instructgpt.labeling import security, store
from instructgpt.labeling.answers import AnswerError
from instructgpt.labeling.web import (
    HERE,
    CurrentUser,
    LoginRequired,
    current_user,
    flash,
    in_thread,
    log_in,
    log_out,
    one,
    read_form,
    render,
)

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # invite links carry their token in the path
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def create_app(
    database_url: str = database.DEFAULT_URL,
    session_hours: float = 12.0,
    idle_minutes: float = 120.0,
    secure_cookies: bool = False,
    max_upload_mb: int = 64,
    migrate: bool = True,
) -> FastAPI:
    """The application over one database; migrates it to the latest schema first."""
    engine = database.make_engine(database_url)
    if migrate:
        database.migrate(engine)
    sessions = database.session_factory(engine)
    app = FastAPI(title="instructgpt labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.sessions = engine, sessions
    app.state.reads = database.read_session_factory(engine)
    # SQLite has one writer at a time; queueing this process's writers on a lock hands the
    # write lock over at once, where SQLite's busy handler would poll with growing sleeps.
    app.state.write_lock = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    app.state.session_seconds = session_hours * 3600
    app.state.max_upload_bytes = max_upload_mb << 20
    app.state.login_throttle = security.LoginThrottle()
    app.add_middleware(
        SessionMiddleware,
        secret_key=database.secret_key(sessions),
        session_cookie="label_session",
        max_age=int(idle_minutes * 60),
        same_site="lax",
        https_only=secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(security.BodyLimit, upload_bytes=app.state.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_exception_handler(LoginRequired, lambda request, exc: RedirectResponse("/login", 303))
    app.add_exception_handler(StarletteHTTPException, _error_page)
    app.include_router(_labeler_routes(app))
    from instructgpt.labeling.admin import router

    app.include_router(router)
    return app


def _error_page(request: Request, exc: StarletteHTTPException):
    if exc.status_code == 404 and exc.detail == "Not Found":
        exc.detail = "Not found."
    return render(
        request, "message.html", status_code=exc.status_code, title=f"Error {exc.status_code}", message=exc.detail
    )


def _labeler_routes(app: FastAPI):
    from fastapi import APIRouter

    routes = APIRouter()
    sessions, reads = app.state.sessions, app.state.reads

    @routes.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @routes.get("/login")
    def login_page(request: Request):
        return render(request, "login.html")

    @routes.post("/login")
    async def login(request: Request):
        form, _ = await read_form(request)
        username, password = one(form, "username", 64), one(form, "password", security.LIMITS["password"])
        address = request.client.host if request.client else "-"
        wait = app.state.login_throttle.attempt(username, address)
        if wait:
            message = f"Too many failed logins; try again in {max(1, round(wait / 60))} minutes."
            return render(request, "login.html", status_code=429, error=message, username=username)

        def check():
            with app.state.reads() as db:
                found = store.password_hash(db, username)
            return store.check_password(found, password)  # slow on purpose: out of the transaction

        user_id = await in_thread(check)
        if user_id is None:
            return render(
                request, "login.html", status_code=400, error="Wrong username or password.", username=username
            )
        app.state.login_throttle.succeeded(username, address)
        await log_in(request, user_id)
        return RedirectResponse("/", 303)

    @routes.post("/logout")
    async def logout(request: Request):
        await read_form(request)
        await log_out(request)
        return RedirectResponse("/login", 303)

    @routes.get("/")
    def home(request: Request, user: CurrentUser = Depends(current_user)):
        with reads() as db:
            projects = store.progress(db, user.id)
        return render(request, "home.html", projects=projects)

    @routes.get("/projects/{project_id}/next")
    def next_task(request: Request, project_id: int, user: CurrentUser = Depends(current_user)):
        with reads() as db:
            assignment_id = store.next_assignment(db, user.id, project_id)
        if assignment_id is None:
            flash(request, "No more tasks in this project for now. Thank you!")
            return RedirectResponse("/", 303)
        return RedirectResponse(f"/tasks/{assignment_id}", 303)

    def _task_page(
        request: Request,
        user: CurrentUser,
        assignment_id: int,
        status_code: int = 200,
        error: str | None = None,
        values: dict | None = None,
    ):
        with reads() as db:
            try:
                task = store.load_task(db, user.id, assignment_id)
            except store.NotFound:
                raise HTTPException(404, "No such task.") from None
        if task.assignment.status != "pending" and error is None:
            return render(
                request,
                "message.html",
                title="Already done",
                message=f"This task was {task.assignment.status}.",
                link=f"/projects/{task.project.id}/next",
                link_text="Next task",
            )
        return render(
            request,
            f"task_{task.project.kind}.html",
            status_code=status_code,
            task=task,
            key=security.new_token(),
            error=error,
            values=values or {},
        )

    @routes.get("/tasks/{assignment_id}")
    def task_page(request: Request, assignment_id: int, user: CurrentUser = Depends(current_user)):
        return _task_page(request, user, assignment_id)

    @routes.post("/tasks/{assignment_id}")
    async def submit(request: Request, assignment_id: int, user: CurrentUser = Depends(current_user)):
        form, _ = await read_form(request)
        key = one(form, "idempotency_key", 64)

        def save():
            with reads() as db:
                try:
                    answer, project_id = store.check_answer(db, user.id, user.username, assignment_id, form)
                except store.NotFound:
                    raise HTTPException(404, "No such task.") from None
            with app.state.write_lock, sessions() as db:
                store.store_answer(db, user.id, assignment_id, key, answer)
            return RedirectResponse(f"/projects/{project_id}/next", 303)

        try:
            return await in_thread(save)
        except store.AlreadyDone as err:
            raise HTTPException(409, str(err)) from None
        except (AnswerError, store.StoreError) as err:
            return await in_thread(_task_page, request, user, assignment_id, 400, str(err), form)

    @routes.post("/tasks/{assignment_id}/skip")
    async def skip(request: Request, assignment_id: int, user: CurrentUser = Depends(current_user)):
        await read_form(request)

        def save():
            with app.state.write_lock, sessions.begin() as db:
                try:
                    store.skip(db, user.id, assignment_id)
                    return store.load_task(db, user.id, assignment_id, with_progress=False).project.id
                except store.NotFound:
                    raise HTTPException(404, "No such task.") from None

        project_id = await in_thread(save)
        return RedirectResponse(f"/projects/{project_id}/next", 303)

    @routes.get("/invite/{token}")
    def invite_page(request: Request, token: str):
        with reads() as db:
            try:
                invite = store.open_invite(db, token)
            except store.NotFound:
                raise HTTPException(404, "This invite link is unknown, used or expired.") from None
        return render(request, "invite.html", token=token, role=invite.role)

    @routes.post("/invite/{token}")
    async def accept_invite(request: Request, token: str):
        form, _ = await read_form(request)
        username, password = one(form, "username", 64), one(form, "password", security.LIMITS["password"])
        if password != one(form, "password2", security.LIMITS["password"]):
            return render(
                request, "invite.html", status_code=400, token=token, error="The passwords differ.", username=username
            )

        def save():
            with sessions.begin() as db:
                return store.accept_invite(db, token, username, password).id

        try:
            user_id = await in_thread(save)
        except store.NotFound:
            raise HTTPException(404, "This invite link is unknown, used or expired.") from None
        except store.StoreError as err:
            return render(request, "invite.html", status_code=400, token=token, error=str(err), username=username)
        await log_in(request, user_id)
        return RedirectResponse("/", 303)

    return routes
