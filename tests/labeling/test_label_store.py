"""The database layer, on SQLite and on PostgreSQL: migrations, assignment with overlap,
storing each submission once, concurrent labelers, restarts, invites, generation."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from label_helpers import PASSWORD, open_db, ranking_form, setup_project
from sqlalchemy import func, select

from instructgpt.labeling import db, store
from instructgpt.labeling.answers import AnswerError
from instructgpt.labeling.export import export_records
from instructgpt.labeling.models import Assignment, Base, Output, Submission


def my_assignments(sessions, user_id: int) -> list[int]:
    with sessions() as session:
        return list(session.scalars(select(Assignment.id).where(Assignment.user_id == user_id).order_by(Assignment.id)))


def test_migrations_build_exactly_the_models(database_url):
    engine, _ = open_db(database_url)
    assert db.current_revision(engine) == "0002"
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    db.migrate(engine)  # a second run is a no-op


def test_each_item_goes_to_overlap_distinct_labelers(database_url):
    _, sessions = open_db(database_url)
    ids = setup_project(sessions, n=5, overlap=2, labelers=("ann", "bob", "cy"))
    with sessions() as session:
        rows = session.execute(select(Assignment.item_id, Assignment.user_id)).all()
    per_item = {}
    for item, user in rows:
        per_item.setdefault(item, []).append(user)
    assert len(per_item) == 5 and all(len(set(users)) == len(users) == 2 for users in per_item.values())
    loads = sorted(sum(user == ids[n] for _, user in rows) for n in ("ann", "bob", "cy"))
    assert loads[-1] - loads[0] <= 1  # spread evenly
    with sessions.begin() as session:  # raising the overlap assigns more, never twice
        assert store.update_project(session, ids["project"], "", 3) == 5
        assert store.update_project(session, ids["project"], "", 3) == 0


def test_items_wait_for_their_outputs(database_url):
    _, sessions = open_db(database_url)
    ids = setup_project(sessions, kind="comparison", n=2, k=1)  # one output each: not ready
    with sessions.begin() as session:
        assert store.project_stats(session, ids["project"])["pending"] == 0
        counts = store.attach_outputs(
            session,
            ids["project"],
            [
                store.OutputRecord(prompt_id="p0", response="Another output.", model="ppo"),
                store.OutputRecord(prompt_id="p0", response="A third one.", model="x"),
                store.OutputRecord(prompt_id="nope", response="x"),
            ],
        )
        assert counts == {"added": 1, "full": 1, "unknown_prompt": 1}
        assert store.project_stats(session, ids["project"])["pending"] == 1
        frozen = store.attach_outputs(session, ids["project"], [store.OutputRecord(prompt_id="p0", response="late")])
        assert frozen == {"added": 0, "frozen": 1}


def test_near_duplicate_outputs_reach_no_board(sqlite_url):
    _, sessions = open_db(sqlite_url)
    ids = setup_project(sessions, n=1, k=0, labelers=())
    texts = ["same", "Same", "same ", " sAme\r\n", "different\r\nlines"]
    with sessions.begin() as session:
        records = [store.OutputRecord(prompt_id="p0", response=t) for t in texts]
        outcomes = store.place_outputs(session, ids["project"], records)
        assert outcomes == ["added", "near_duplicate", "near_duplicate", "near_duplicate", "added"]
        stored = session.scalars(select(Output.text).order_by(Output.position)).all()
        assert stored == ["same", "different\nlines"]  # line breaks stored as LF


def test_a_submission_is_stored_once(database_url):
    _, sessions = open_db(database_url)
    ids = setup_project(sessions, k=3)
    first = my_assignments(sessions, ids["ann"])[0]
    form = ranking_form(3)
    with sessions() as session:
        assert store.submit(session, ids["ann"], "ann", first, "key-00000001", form) == "stored"
    with sessions() as session:  # the same request again: a retry or a double click
        assert store.submit(session, ids["ann"], "ann", first, "key-00000001", form) == "duplicate"
    with sessions() as session, pytest.raises(store.AlreadyDone):  # a second answer never overwrites
        store.submit(session, ids["ann"], "ann", first, "key-00000002", ranking_form(3, [2, 1, 1]))
    with sessions() as session:
        answers = session.scalars(select(Submission.answer)).all()
    assert len(answers) == 1 and '"ranks": [0, 1, 0]' in answers[0]


def test_nobody_answers_another_labelers_item(database_url):
    _, sessions = open_db(database_url)
    ids = setup_project(sessions)
    bobs = my_assignments(sessions, ids["bob"])[0]
    with sessions() as session, pytest.raises(store.NotFound):
        store.load_task(session, ids["ann"], bobs)
    with sessions() as session, pytest.raises(store.NotFound):
        store.submit(session, ids["ann"], "ann", bobs, "key-00000003", ranking_form(3))
    with sessions.begin() as session, pytest.raises(store.NotFound):
        store.skip(session, ids["ann"], bobs)
    with sessions() as session:
        assert session.scalar(select(Assignment.status).where(Assignment.id == bobs)) == "pending"


@pytest.mark.parametrize(
    "columns, reason", [([0, 1, 2], "still to be ranked"), ([2, 2, 2], "all outputs tie"), ([1, 2, 9], "from 0 to 3")]
)
def test_bad_rankings_are_refused(sqlite_url, columns, reason):
    _, sessions = open_db(sqlite_url)
    ids = setup_project(sessions, labelers=("ann",))
    with sessions() as session, pytest.raises(AnswerError, match=reason):
        store.submit(
            session,
            ids["ann"],
            "ann",
            my_assignments(sessions, ids["ann"])[0],
            "key-00000004",
            ranking_form(3, columns),
        )


def test_concurrent_labelers_lose_nothing(database_url):
    """8 labelers submit all their items at once, each request sent twice; every item ends up
    with exactly one submission and nobody's row is touched by anyone else."""
    _, sessions = open_db(database_url)
    names = tuple(f"l{i}" for i in range(8))
    ids = setup_project(sessions, n=24, k=3, overlap=2, labelers=names)
    errors = []

    def work(name: str) -> None:
        try:
            for assignment_id in my_assignments(sessions, ids[name]):
                for _ in range(2):
                    with sessions() as session:
                        store.submit(
                            session, ids[name], name, assignment_id, f"k-{name}-{assignment_id:06d}", ranking_form(3)
                        )
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 48
        assert set(session.scalars(select(Assignment.status))) == {"done"}
        owners = session.execute(select(Submission.user_id, Assignment.user_id).join(Assignment)).all()
        assert all(a == b for a, b in owners)
        assert len(export_records(session, ids["project"])) == 48


def test_submissions_survive_a_restart(database_url):
    engine, sessions = open_db(database_url)
    ids = setup_project(sessions, kind="demonstration", labelers=("ann",))
    first = my_assignments(sessions, ids["ann"])[0]
    with sessions() as session:
        store.submit(session, ids["ann"], "ann", first, "key-00000005", {"response": ["A kind answer."]})
    engine.dispose()
    _, again = open_db(database_url)
    with again() as session:
        [record] = export_records(session, ids["project"])
        assert record.response == "A kind answer." and record.labeler_id == "ann"
        assert store.progress(session, ids["ann"])[0].done == 1


def test_invites_are_one_time(database_url):
    _, sessions = open_db(database_url)
    ids = setup_project(sessions, kind="demonstration", n=2, labelers=())
    with sessions.begin() as session:
        token = store.create_invite(session, ids["admin"], "labeler", ids["project"])
    with sessions.begin() as session:
        user = store.accept_invite(session, token, "newbie", PASSWORD)
        assert user.role == "labeler"
        assert len(store.progress(session, user.id)[0:1]) == 1  # joined the project, got items
    with sessions.begin() as session, pytest.raises(store.NotFound):
        store.accept_invite(session, token, "again", PASSWORD)


def test_passwords_are_hashed_and_checked(sqlite_url):
    _, sessions = open_db(sqlite_url)
    with sessions.begin() as session:
        user = store.create_user(session, "ann", PASSWORD, "labeler")
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        assert store.authenticate(session, "ann", PASSWORD) == user.id
        assert store.authenticate(session, "ann", PASSWORD + "x") is None
        assert store.authenticate(session, "nobody", PASSWORD) is None
        with pytest.raises(store.StoreError, match="password"):
            store.create_user(session, "bob", "short", "labeler")
        with pytest.raises(store.StoreError, match="taken"):
            store.create_user(session, "ann", PASSWORD, "labeler")


def test_generate_k_samples_per_prompt_with_a_model(sqlite_url, tmp_path):
    from instructgpt.models.tiny import save_tiny

    model = save_tiny(str(tmp_path / "tiny"))
    _, sessions = open_db(sqlite_url)
    ids = setup_project(sessions, n=2, k=0, labelers=("ann",))
    with sessions.begin() as session:
        counts = store.generate_outputs(session, ids["project"], model, k=3, temperature=1.0, max_new_tokens=4)
        assert counts["added"] >= 4  # identical samples are kept once
        assert store.project_stats(session, ids["project"])["pending"] == 2
