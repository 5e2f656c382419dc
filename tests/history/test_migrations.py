"""Migrations on both databases: from nothing to head, the schema they make is exactly the
models', and several processes migrating at once (replicas starting together) end with one
schema at head."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from history.database import create_engine
from history.migrate import current_revision, head_revision, migrate
from history.schema import Base


async def test_migrated_schema_is_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        await migrate(engine)  # at head already: nothing to do, nothing fails
    finally:
        await engine.dispose()
    assert differences == []
    assert set(tables) == set(Base.metadata.tables) | {"alembic_version"}


async def test_concurrent_migrations_leave_one_schema(database_url: str) -> None:
    """Four processes and four connections of this one migrate the same empty database at
    the same moment."""
    script = (
        "import asyncio, sys\n"
        "from history.database import create_engine\n"
        "from history.migrate import migrate\n"
        "async def main():\n"
        "    engine = create_engine(sys.argv[1])\n"
        "    await migrate(engine)\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, database_url, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    engines = [create_engine(database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        outcomes = [await process.communicate() for process in processes]
        revision = await current_revision(engines[0])
        async with engines[0].connect() as connection:
            versions = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            rows = versions.all()
    finally:
        for engine in engines:
            await engine.dispose()
    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err for _, err in outcomes]
    assert revision == head_revision()
    assert len(rows) == 1
