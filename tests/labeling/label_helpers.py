"""Building blocks of the labeling tests: a migrated database with people and projects."""

from __future__ import annotations

import re

from instructgpt.data.schemas import Prompt
from instructgpt.labeling import db, store

PASSWORD = "correct horse battery"


def open_db(url: str):
    engine = db.make_engine(url, pool_size=5)
    db.migrate(engine)
    return engine, db.session_factory(engine)


def prompts(n: int, prefix: str = "p") -> list[Prompt]:
    return [
        Prompt(id=f"{prefix}{i}", text=f"Write a haiku about the number {i}.", user_id=f"u{i % 3}", source="api")
        for i in range(n)
    ]


def outputs(n: int, k: int, models: tuple[str, ...] = ("sft",)) -> list[store.OutputRecord]:
    return [
        store.OutputRecord(prompt_id=f"p{i}", response=f"Output {j} for prompt {i}.", model=models[j % len(models)])
        for i in range(n)
        for j in range(k)
    ]


def setup_project(
    sessions,
    kind: str = "ranking",
    n: int = 4,
    k: int = 3,
    overlap: int = 1,
    labelers: tuple[str, ...] = ("ann", "bob"),
    ask_ratings: bool = True,
) -> dict:
    """An admin, labelers and one project with ``n`` prompts (and ``k`` outputs each), all
    assigned. Returns the ids by name."""
    with sessions.begin() as session:
        ids = {"admin": store.create_user(session, "admin", PASSWORD, "admin").id}
        for name in labelers:
            ids[name] = store.create_user(session, name, PASSWORD, "labeler").id
        project = store.create_project(session, f"{kind} project", kind, "Rank by helpfulness.", overlap, ask_ratings)
        ids["project"] = project.id
        store.import_prompts(session, project.id, prompts(n))
        if kind != "demonstration":
            models = ("sft", "ppo") if kind == "comparison" else ("sft",)
            store.attach_outputs(session, project.id, outputs(n, k, models))
        store.set_members(session, project.id, [ids[name] for name in labelers])
    return ids


def ranking_form(k: int, columns: list[int] | None = None, key: str = "key-00000001") -> dict[str, list[str]]:
    columns = columns or [1 + (i % 2) for i in range(k)]
    form = {f"rank_{i}": [str(c)] for i, c in enumerate(columns)}
    form.update({f"likert_{i}": [str(7 - i % 7)] for i in range(k)})
    form["flag_0"] = ["hallucination"]
    form["notes"] = ["fine"]
    return form


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def form_key(html: str) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1)


def login(client, username: str, password: str = PASSWORD):
    token = csrf(client.get("/login").text)
    response = client.post(
        "/login", data={"csrf_token": token, "username": username, "password": password}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return response
