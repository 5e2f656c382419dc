"""Alembic's environment: always handed a connection by `history.migrate` (the advisory or
file lock is held around it), never a URL of its own."""

from __future__ import annotations

from alembic import context

from history.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `voicegw history migrate` (history.migrate)")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
)
with context.begin_transaction():
    context.run_migrations()
