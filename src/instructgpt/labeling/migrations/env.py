"""Alembic environment: runs on the connection ``db.migrate`` passes in, or on
``sqlalchemy.url`` when Alembic is run by hand."""

from alembic import context
from sqlalchemy import create_engine

from instructgpt.labeling.models import Base

config = context.config
connection = config.attributes.get("connection")


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).begin() as own:
        _run(own)
