"""The web application over HTTP, on SQLite and PostgreSQL: sessions, CSRF, authorisation,
size limits, each task screen, idempotent submission, admin pages and export."""

from __future__ import annotations

import json
import re
import time

import pytest
from fastapi.testclient import TestClient
from label_helpers import PASSWORD, csrf, form_key, login, setup_project
from sqlalchemy import func, select

from instructgpt.cli.data import main as data_main
from instructgpt.labeling.app import create_app
from instructgpt.labeling.models import Assignment, Submission


@pytest.fixture
def app(database_url):
    app = create_app(database_url)
    yield app
    app.state.engine.dispose()


@pytest.fixture
def sqlite_app(sqlite_url):
    app = create_app(sqlite_url)
    yield app
    app.state.engine.dispose()


def client_of(app, username: str | None = None) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    if username:
        login(client, username)
    return client


def assignments(app, user_id: int) -> list[int]:
    with app.state.sessions() as session:
        return list(session.scalars(select(Assignment.id).where(Assignment.user_id == user_id).order_by(Assignment.id)))


def count_submissions(app) -> int:
    with app.state.sessions() as session:
        return session.scalar(select(func.count()).select_from(Submission))


def ranking_post(html: str, columns: list[int], likert: list[int]) -> dict:
    data = {"csrf_token": csrf(html), "idempotency_key": form_key(html), "notes": "B and C tie."}
    for i, (column, rating) in enumerate(zip(columns, likert)):
        data[f"rank_{i}"], data[f"likert_{i}"] = str(column), str(rating)
    data["flag_1"] = ["hallucination", "expresses_opinion"]
    return data


def export_and_validate(admin: TestClient, project_id: int, tmp_path, kind: str) -> list[dict]:
    response = admin.get(f"/admin/projects/{project_id}/export")
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    path = tmp_path / f"export-{kind}.jsonl"
    path.write_bytes(response.content)
    assert data_main(["validate", "--kind", kind, str(path)]) == 0
    return [json.loads(line) for line in response.text.splitlines()]


def test_ranking_end_to_end_stored_once_and_exported(app, tmp_path):
    ids = setup_project(app.state.sessions, n=3, k=3, labelers=("ann",))
    ann = client_of(app, "ann")
    home = ann.get("/")
    assert re.search(r'class="progress">0 / 3<', home.text)
    page = ann.get(ann.get(f"/projects/{ids['project']}/next").headers["location"])
    assert "Rank 1 (best)" in page.text and "Rank 3 (worst)" in page.text and "To be ranked" in page.text
    assert "0 / 3" in page.text and "Rank by helpfulness." in page.text  # progress and instructions
    data = ranking_post(page.text, [1, 2, 2], [6, 3, 3])
    first = ann.post(page.url.path, data=data)
    again = ann.post(page.url.path, data=data)  # a double click / a retry
    assert first.status_code == again.status_code == 303
    assert count_submissions(app) == 1
    conflicting = ann.post(page.url.path, data={**data, "idempotency_key": "another-key-123", "rank_0": "3"})
    assert conflicting.status_code == 409 and count_submissions(app) == 1
    nxt = ann.get(ann.get(f"/projects/{ids['project']}/next").headers["location"])
    assert "1 / 3" in nxt.text
    skipped = ann.post(nxt.url.path + "/skip", data={"csrf_token": csrf(nxt.text)})
    assert skipped.status_code == 303
    [record] = export_and_validate(client_of(app, "admin"), ids["project"], tmp_path, "rankings")
    assert record["ranks"] == [0, 1, 1] and record["labeler_id"] == "ann"  # the tie is kept
    assert record["likert"] == [6, 3, 3] and record["metadata"][1]["hallucination"] is True
    assert record["metadata"][0]["hallucination"] is False and record["notes"] == "B and C tie."


def test_a_bad_answer_is_shown_again_with_the_reason(sqlite_app):
    ids = setup_project(sqlite_app.state.sessions, n=1, k=3, labelers=("ann",))
    ann = client_of(sqlite_app, "ann")
    url = f"/tasks/{assignments(sqlite_app, ids['ann'])[0]}"
    page = ann.get(url)
    response = ann.post(url, data=ranking_post(page.text, [1, 0, 2], [5, 5, 5]))
    assert response.status_code == 400 and "output(s) B still to be ranked" in response.text
    assert 'value="2" selected' in response.text  # the labeler's choices are kept
    assert count_submissions(sqlite_app) == 0


def test_demonstrations_are_written_and_exported(sqlite_app, tmp_path):
    ids = setup_project(sqlite_app.state.sessions, kind="demonstration", n=2, labelers=("ann",))
    ann = client_of(sqlite_app, "ann")
    for answer in ("Numbers count / quietly in rows of one / two follows in turn.", "A second haiku."):
        page = ann.get(ann.get(f"/projects/{ids['project']}/next").headers["location"])
        assert '<textarea name="response"' in page.text
        ann.post(
            page.url.path,
            data={"csrf_token": csrf(page.text), "idempotency_key": form_key(page.text), "response": answer},
        )
    assert ann.get(f"/projects/{ids['project']}/next").headers["location"] == "/"
    records = export_and_validate(client_of(sqlite_app, "admin"), ids["project"], tmp_path, "demonstrations")
    assert [r["prompt_id"] for r in records] == ["p0", "p1"] and records[1]["response"] == "A second haiku."


def test_comparisons_are_blind_and_randomised(sqlite_app, tmp_path):
    ids = setup_project(sqlite_app.state.sessions, kind="comparison", n=24, k=2, labelers=("ann",))
    ann = client_of(sqlite_app, "ann")
    shown_first, orders = [], set()
    for assignment_id in assignments(sqlite_app, ids["ann"]):
        page = ann.get(f"/tasks/{assignment_id}")
        assert "sft" not in page.text and "ppo" not in page.text  # model identities hidden
        texts = re.findall(r'<h3>Output \d</h3><div class="pre">([^<]*)</div>', page.text)
        orders.add(texts[0].startswith("Output 0"))
        shown_first.append(texts[0])
        ann.post(
            page.url.path,
            data={"csrf_token": csrf(page.text), "idempotency_key": form_key(page.text), "preferred": "1"},
        )
    assert orders == {True, False}  # both orders were shown (probability 1 - 2^-23)
    records = export_and_validate(client_of(sqlite_app, "admin"), ids["project"], tmp_path, "comparisons")
    for record, first in zip(records, shown_first):
        assert record[f"response_{record['preferred']}"] == first  # chose what was shown first
        assert (record["model_a"], record["model_b"]) == ("sft", "ppo")


def test_labelers_see_only_their_own_items(app):
    ids = setup_project(app.state.sessions, n=2, k=3, labelers=("ann", "bob"))
    ann = client_of(app, "ann")
    bobs = assignments(app, ids["bob"])[0]
    assert ann.get(f"/tasks/{bobs}").status_code == 404
    token = csrf(ann.get("/").text)
    attempt = {"csrf_token": token, "idempotency_key": "ann-tries-bobs", "rank_0": "1", "rank_1": "2", "rank_2": "2"}
    assert ann.post(f"/tasks/{bobs}", data=attempt).status_code == 404
    assert ann.post(f"/tasks/{bobs}/skip", data={"csrf_token": token}).status_code == 404
    assert count_submissions(app) == 0
    with app.state.sessions() as session:
        assert session.scalar(select(Assignment.status).where(Assignment.id == bobs)) == "pending"


def test_admin_pages_need_the_admin_role(app):
    ids = setup_project(app.state.sessions, n=1, k=2, labelers=("ann",))
    anonymous, ann = client_of(app), client_of(app, "ann")
    pages = ["/admin", f"/admin/projects/{ids['project']}", f"/admin/projects/{ids['project']}/export"]
    for page in pages:
        assert anonymous.get(page).headers["location"] == "/login"
        assert ann.get(page).status_code == 403
    token = csrf(ann.get("/").text)
    for action in [
        "/admin/projects",
        "/admin/invites",
        f"/admin/projects/{ids['project']}/settings",
        f"/admin/projects/{ids['project']}/members",
    ]:
        assert (
            ann.post(action, data={"csrf_token": token, "name": "x", "overlap": "5", "member": "1"}).status_code == 403
        )
    assert anonymous.get("/").headers["location"] == "/login"
    assert client_of(app, "admin").get(pages[1]).status_code == 200


def test_every_post_needs_the_csrf_token(sqlite_app):
    ids = setup_project(sqlite_app.state.sessions, kind="demonstration", n=1, labelers=("ann",))
    fresh = client_of(sqlite_app)
    fresh.get("/login")
    assert fresh.post("/login", data={"username": "ann", "password": PASSWORD}).status_code == 403
    ann = client_of(sqlite_app, "ann")
    url = f"/tasks/{assignments(sqlite_app, ids['ann'])[0]}"
    page = ann.get(url)
    forged = {"csrf_token": "forged", "idempotency_key": form_key(page.text), "response": "x"}
    assert ann.post(url, data=forged).status_code == 403
    assert ann.post(url, data={k: v for k, v in forged.items() if k != "csrf_token"}).status_code == 403
    admin = client_of(sqlite_app, "admin")
    assert admin.post("/admin/projects", data={"name": "p", "kind": "ranking", "overlap": "1"}).status_code == 403
    assert count_submissions(sqlite_app) == 0


def test_sessions_expire(sqlite_app, monkeypatch):
    setup_project(sqlite_app.state.sessions, n=1, k=2, labelers=("ann",))
    ann = client_of(sqlite_app, "ann")
    assert ann.get("/").status_code == 200
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 3 * 3600)  # idle for 3 h (limit 2 h)
    assert ann.get("/").headers["location"] == "/login"
    monkeypatch.undo()
    ann = client_of(sqlite_app, "ann")
    sqlite_app.state.session_seconds = 60  # logged in for more than the session's lifetime
    monkeypatch.setattr(time, "time", lambda: now + 90)
    assert ann.get("/").headers["location"] == "/login"
    monkeypatch.undo()
    assert client_of(sqlite_app, "ann").post("/login", data={}).status_code == 403  # no new session by accident
    bad = client_of(sqlite_app)
    page = bad.get("/login")
    response = bad.post("/login", data={"csrf_token": csrf(page.text), "username": "ann", "password": "wrong pass"})
    assert response.status_code == 400 and "Wrong username or password" in response.text


def test_every_input_has_a_size_limit(sqlite_app):
    ids = setup_project(sqlite_app.state.sessions, kind="demonstration", n=1, labelers=("ann",))
    ann = client_of(sqlite_app, "ann")
    url = f"/tasks/{assignments(sqlite_app, ids['ann'])[0]}"
    page = ann.get(url)
    base = {"csrf_token": csrf(page.text), "idempotency_key": form_key(page.text)}
    too_long = ann.post(url, data={**base, "response": "x" * 20_001})
    assert too_long.status_code == 400 and "longer than 20000" in too_long.text
    assert ann.post(url, data={**base, "response": "x" * 2_000_000}).status_code == 413
    assert ann.post("/login", data={"csrf_token": base["csrf_token"], "username": "u" * 65}).status_code == 400
    assert count_submissions(sqlite_app) == 0
    assert ann.post(url, data={**base, "response": "x" * 20_000}).status_code == 303


def test_security_headers(sqlite_app):
    response = client_of(sqlite_app).get("/login")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_admin_sets_up_a_project_and_invites_a_labeler(sqlite_app, tmp_path):
    with sqlite_app.state.sessions.begin() as session:
        from instructgpt.labeling import store

        store.create_user(session, "admin", PASSWORD, "admin")
    admin = client_of(sqlite_app, "admin")
    token = csrf(admin.get("/admin").text)
    created = admin.post(
        "/admin/projects",
        data={
            "csrf_token": token,
            "name": "Helpful",
            "kind": "ranking",
            "overlap": "2",
            "ask_ratings": "yes",
            "instructions": "Be fair.",
        },
    )
    project = created.headers["location"]
    prompts = "".join(
        json.dumps({"id": f"q{i}", "text": f"Question {i}?", "user_id": "c1", "source": "api"}) + "\n" for i in range(3)
    )
    response = admin.post(
        f"{project}/prompts/upload", data={"csrf_token": token}, files={"file": ("prompts.jsonl", prompts.encode())}
    )
    assert response.status_code == 303 and "Imported 3 prompts" in admin.get(project).text
    bad = admin.post(
        f"{project}/prompts/upload",
        data={"csrf_token": token},
        files={"file": ("bad.jsonl", b'{"id": "x", "text": 5}\n')},
    )
    assert bad.status_code == 303
    assert 'role="status">bad.jsonl:1: text: Input should be a valid string' in admin.get(project).text
    outputs = "".join(
        json.dumps({"prompt_id": f"q{i}", "response": f"Answer {j} to {i}.", "model": "sft"}) + "\n"
        for i in range(3)
        for j in range(4)
    )
    admin.post(f"{project}/outputs/upload", data={"csrf_token": token}, files={"file": ("out.jsonl", outputs.encode())})
    assert "3 items, 12 outputs" in admin.get(project).text
    admin.post("/admin/invites", data={"csrf_token": token, "role": "labeler", "project_id": project.rsplit("/", 1)[1]})
    link = re.search(r"(http://testserver/invite/[\w-]+)", admin.get("/admin").text).group(1)
    newbie = client_of(sqlite_app)
    signup = newbie.get(link)
    assert signup.status_code == 200
    joined = newbie.post(
        link, data={"csrf_token": csrf(signup.text), "username": "newbie", "password": PASSWORD, "password2": PASSWORD}
    )
    assert joined.status_code == 303 and re.search(r'class="progress">0 / 3<', newbie.get("/").text)
    assert client_of(sqlite_app).get(link).status_code == 404  # used
    page = admin.get(project)
    members = admin.post(
        f"{project}/members",
        data={"csrf_token": token, "member": re.findall(r'name="member" value="(\d+)"', page.text)},
    )
    assert members.status_code == 303  # admin + newbie: each item now has overlap 2
    assert "6 pending" in admin.get(project).text


def test_a_restart_keeps_sessions_and_submissions(sqlite_url):
    app = create_app(sqlite_url)
    ids = setup_project(app.state.sessions, kind="demonstration", n=2, labelers=("ann",))
    ann = client_of(app, "ann")
    page = ann.get(f"/tasks/{assignments(app, ids['ann'])[0]}")
    data = {"csrf_token": csrf(page.text), "idempotency_key": form_key(page.text), "response": "Kept."}
    assert ann.post(page.url.path, data=data).status_code == 303
    app.state.engine.dispose()

    restarted = create_app(sqlite_url)  # same database file, a new process's worth of state
    ann = TestClient(restarted, follow_redirects=False, cookies=dict(ann.cookies))
    assert re.search(r'class="progress">1 / 2<', ann.get("/").text)  # still logged in
    assert ann.post(page.url.path, data=data).status_code == 303  # a retry after the restart
    assert count_submissions(restarted) == 1
    restarted.state.engine.dispose()


def test_logout_ends_the_session_on_the_server(app):
    setup_project(app.state.sessions, n=1, k=2, labelers=("ann",))
    ann = client_of(app, "ann")
    saved = dict(ann.cookies)  # a copy of the cookie taken before logout
    assert ann.post("/logout", data={"csrf_token": csrf(ann.get("/").text)}).headers["location"] == "/login"
    replayed = TestClient(app, follow_redirects=False, cookies=saved)
    assert replayed.get("/").headers["location"] == "/login"
    other = client_of(app, "ann")  # another browser of the same labeler stays logged in
    assert other.get("/").status_code == 200


def test_an_admin_deactivates_an_account_and_it_is_out_at_once(app):
    ids = setup_project(app.state.sessions, n=1, k=2, labelers=("ann",))
    ann, admin = client_of(app, "ann"), client_of(app, "admin")
    assert ann.get("/").status_code == 200
    page = admin.get("/admin")
    assert f'action="/admin/users/{ids["admin"]}/active"' not in page.text  # not oneself
    off = admin.post(f"/admin/users/{ids['ann']}/active", data={"csrf_token": csrf(page.text), "active": "no"})
    assert off.status_code == 303 and "ann deactivated" in admin.get("/admin").text
    assert ann.get("/").headers["location"] == "/login"  # the very next request
    fresh = client_of(app)
    refused = fresh.post(
        "/login", data={"csrf_token": csrf(fresh.get("/login").text), "username": "ann", "password": PASSWORD}
    )
    assert refused.status_code == 400
    admin.post(f"/admin/users/{ids['admin']}/active", data={"csrf_token": csrf(page.text), "active": "no"})
    assert admin.get("/admin").status_code == 200  # an admin cannot lock themselves out
    admin.post(f"/admin/users/{ids['ann']}/active", data={"csrf_token": csrf(page.text), "active": "yes"})
    assert client_of(app, "ann").get("/").status_code == 200


def test_logins_are_throttled_per_account_and_per_address(sqlite_app, monkeypatch):
    setup_project(sqlite_app.state.sessions, n=1, k=2, labelers=("ann", "bob"))
    client = client_of(sqlite_app)

    def attempt(username, password):
        token = csrf(client.get("/login").text)
        return client.post("/login", data={"csrf_token": token, "username": username, "password": password})

    for _ in range(5):
        assert attempt("ann", "wrong pass").status_code == 400
    refused = attempt("ann", PASSWORD)  # the right password, but after 5 failures
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert attempt("bob", PASSWORD).status_code == 303  # another account from the same address
    throttle = sqlite_app.state.login_throttle
    for i in range(20):
        throttle.attempt(f"guess{i}", "testclient")  # 20 failures on different accounts
    assert attempt("bob", PASSWORD).status_code == 429  # the address is out
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 901)  # the 15-minute window has passed
    assert attempt("ann", PASSWORD).status_code == 303


def test_text_is_stored_with_lf_line_breaks(sqlite_app, tmp_path):
    ids = setup_project(sqlite_app.state.sessions, kind="demonstration", n=1, labelers=("ann",))
    ann = client_of(sqlite_app, "ann")
    page = ann.get(f"/tasks/{assignments(sqlite_app, ids['ann'])[0]}")
    answer = "First line,\r\nsecond line,\rthird line.\r\n"  # what a browser sends from a textarea
    data = {"csrf_token": csrf(page.text), "idempotency_key": form_key(page.text), "response": answer}
    assert ann.post(page.url.path, data=data).status_code == 303
    [record] = export_and_validate(client_of(sqlite_app, "admin"), ids["project"], tmp_path, "demonstrations")
    assert record["response"] == "First line,\nsecond line,\nthird line."


def test_invalid_utf8_in_a_form_is_refused(sqlite_app):
    ids = setup_project(sqlite_app.state.sessions, kind="demonstration", n=1, labelers=("ann",))
    ann = client_of(sqlite_app, "ann")
    page = ann.get(f"/tasks/{assignments(sqlite_app, ids['ann'])[0]}")
    body = f"csrf_token={csrf(page.text)}&idempotency_key={form_key(page.text)}&response=caf%E9+au+lait"
    urlencoded = {"content-type": "application/x-www-form-urlencoded"}
    refused = ann.post(page.url.path, content=body.encode(), headers=urlencoded)  # Latin-1 "é"
    assert refused.status_code == 400 and "response: not valid UTF-8" in refused.text
    raw = ann.post(page.url.path, content=body.replace("%E9", "\xe9").encode("latin-1"), headers=urlencoded)
    assert raw.status_code == 400
    multipart = ann.post(page.url.path, data={"response": "x"}, files={"f": ("a", b"b")})
    assert multipart.status_code == 415  # only uploads are multipart
    assert count_submissions(sqlite_app) == 0
    good = ann.post(page.url.path, content=body.replace("%E9", "%C3%A9").encode(), headers=urlencoded)
    assert good.status_code == 303 and count_submissions(sqlite_app) == 1


def test_export_file_names_follow_rfc_6266(app):
    from urllib.parse import unquote

    from instructgpt.labeling import store
    from instructgpt.labeling.models import Project

    ids = setup_project(app.state.sessions, n=1, k=2, labelers=("ann",))
    admin = client_of(app, "admin")
    with app.state.sessions.begin() as session:
        with pytest.raises(store.StoreError, match="one line"):
            store.create_project(session, "two\nlines", "ranking")
        other = store.create_project(session, "Отчёт «α»", "demonstration").id
        session.get(Project, ids["project"]).name = 'made\r\nbefore "1"'  # a name from before the check
    for project_id, exact in ((other, "Отчёт «α»-demonstrations.jsonl"), (ids["project"], None)):
        response = admin.get(f"/admin/projects/{project_id}/export")
        assert response.status_code == 200
        header = response.headers["content-disposition"]
        pattern = r"attachment; filename=\"([\w.-]+)\"; filename\*=UTF-8''(\S+)"
        fallback, encoded = re.fullmatch(pattern, header).groups()
        assert fallback.endswith(".jsonl") and "\n" not in unquote(encoded) and "\r" not in unquote(encoded)
        if exact:
            assert unquote(encoded) == exact


def test_an_uploaded_file_is_refused_whole_with_its_name_and_lines(sqlite_app):
    ids = setup_project(sqlite_app.state.sessions, n=2, k=2, labelers=())
    admin = client_of(sqlite_app, "admin")
    project = f"/admin/projects/{ids['project']}"
    token = csrf(admin.get(project).text)
    lines = [
        {"prompt_id": "p0", "response": "same"},
        {"prompt_id": "p0", "response": "Same"},  # line 2: a near-duplicate
        {"prompt_id": "p0", "response": "same "},  # line 3: another
        {"prompt_id": "nope", "response": "x"},  # line 4: no such prompt
        {"prompt_id": "p1", "response": "x" * 50_001},  # line 5: too long
    ]
    upload = "".join(json.dumps(line) + "\n" for line in lines).encode()
    admin.post(f"{project}/outputs/upload", data={"csrf_token": token}, files={"file": ("mine.jsonl", upload)})
    page = admin.get(project).text
    assert "mine.jsonl:5: response: longer than 50,000 characters" in page and "/tmp" not in page
    upload = "".join(json.dumps(line) + "\n" for line in lines[:4]).encode()
    admin.post(f"{project}/outputs/upload", data={"csrf_token": token}, files={"file": ("mine.jsonl", upload)})
    page = admin.get(project).text
    assert "mine.jsonl:2: response: the same as another output of prompt &#39;p0&#39; up to case" in page
    assert "mine.jsonl:3: response:" in page and "mine.jsonl:4: prompt_id: no prompt &#39;nope&#39;" in page
    assert "2 items, 4 outputs" in page  # nothing of the refused file was stored
