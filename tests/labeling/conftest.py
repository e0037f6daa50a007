"""Fixtures of the labeling tests: a database on SQLite and on PostgreSQL, an app over it,
people and a project.

PostgreSQL comes from ``$INSTRUCTGPT_TEST_POSTGRES_URL`` (``scripts/services.sh`` starts a
throwaway server on loopback and prints it; ``scripts/test.sh`` exports it). Each test gets
its own schema, dropped afterwards. Without the variable the PostgreSQL cases are skipped.
"""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_ENV = "INSTRUCTGPT_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'labeling.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f'PostgreSQL: set {POSTGRES_ENV} (eval "$(bash scripts/services.sh)")')
    from sqlalchemy import create_engine

    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'labeling.db'}"
