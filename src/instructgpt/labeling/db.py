"""Database engines and migrations.

SQLite is the default (a file, nothing to install); any SQLAlchemy URL of PostgreSQL works
(``postgresql://`` is read as psycopg 3). SQLite runs in WAL mode with full fsync, foreign keys
on, and every writing transaction opened ``BEGIN IMMEDIATE``: writers queue on the busy
timeout instead of failing when two transactions both try to upgrade a read lock. Sessions
from ``read_session_factory`` open a plain ``BEGIN`` and, in WAL mode, never wait for a writer. The schema is
created and upgraded by Alembic (``migrate``), never by ``create_all``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from instructgpt.labeling.models import Setting

DEFAULT_URL = "sqlite:///labeling.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` -> ``postgresql+psycopg://`` (psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str = DEFAULT_URL, pool_size: int = 20) -> Engine:
    url = normalise_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    engine = create_engine(
        url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=pool_size, max_overflow=pool_size
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=60000"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for pages that only read (same pool; on SQLite they take no write lock)."""
    return sessionmaker(engine.execution_options(read_only=True), expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrades the schema to ``revision`` with the migrations shipped in this package."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def secret_key(sessions: sessionmaker[Session]) -> str:
    """The key that signs session cookies: made once, kept in the database so that sessions
    survive a restart."""
    with sessions.begin() as session:
        value = session.scalar(select(Setting.value).where(Setting.key == "secret_key"))
        if value is None:
            value = secrets.token_hex(32)
            session.add(Setting(key="secret_key", value=value))
    return value
