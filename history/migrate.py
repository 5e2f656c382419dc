"""Schema migrations (Alembic, `history/migrations/`), safe to run from several processes at
once: every gateway replica migrates when it starts (and `voicegw history migrate` does it on
demand); on PostgreSQL the upgrade runs under a transaction-scoped advisory lock, so one
replica migrates and the others find the schema at head; on SQLite under a lock file beside
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock's key: "voicegw history" as a signed 64-bit number.
_ADVISORY_LOCK = int.from_bytes(b"vgwhist!", "big", signed=True)
_LOCK_POLL_S = 0.05
LOCK_TIMEOUT_S = 60.0


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to head; waits for a migration another process is running."""
    async with _file_lock(engine):
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK}
                )
            await connection.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@contextlib.asynccontextmanager
async def _file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """SQLite: an exclusive lock on `<database>.migrate.lock`, polled so the event loop (and
    another migration in this process) keeps running while it waits."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another migration holds the history database") from None
                await asyncio.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock
