"""Where the history is kept: PostgreSQL when DATABASE_URL is set, else a SQLite file under
VOICEGW_DATA_DIR, both through SQLAlchemy's asyncio engine (asyncpg, aiosqlite).

Every connection and statement is bounded in time, so a database that is down or hung costs
the background writer a bounded wait, never a caller.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipelines.contracts import Settings

log = logging.getLogger("voicegw.history")

DatabaseKind = Literal["sqlite", "postgresql"]

SQLITE_FILE = "history.db"
CONNECT_TIMEOUT_S = 3.0
STATEMENT_TIMEOUT_S = 10.0
_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


@dataclass(frozen=True)
class HistoryConfig:
    """What the history needs from Settings, explicit. `url` is a secret (it may carry a
    password): log `where` instead."""

    url: str
    transcripts: bool = True
    retention_days: int = 30
    queue_size: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> HistoryConfig:
        if settings.database_url is not None:
            url = settings.database_url.get_secret_value()
        else:
            url = sqlite_url(Path(settings.voicegw_data_dir) / SQLITE_FILE)
        return cls(
            url=url,
            transcripts=settings.history_transcripts,
            retention_days=settings.history_retention_days,
            queue_size=settings.history_queue_size,
        )

    @property
    def kind(self) -> DatabaseKind:
        return "sqlite" if async_url(self.url).get_backend_name() == "sqlite" else "postgresql"

    @property
    def where(self) -> str:
        """The database for a log line: the file, or host/database with no credentials."""
        url = async_url(self.url)
        if self.kind == "sqlite":
            return str(url.database)
        return f"{url.host}:{url.port or 5432}/{url.database}"


def unusable_data_dir(settings: Settings) -> str | None:
    """Why the SQLite history cannot be kept where the settings say (None: it can, or it is
    not used), in a line naming the variable, for start-up to refuse with."""
    if not settings.history_enabled or settings.database_url is not None:
        return None
    where = Path(settings.voicegw_data_dir)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"VOICEGW_DATA_DIR: cannot make {where} for the history ({exc.strerror})"
    if not os.access(where, os.W_OK | os.X_OK):
        return f"VOICEGW_DATA_DIR: {where} is not writable by this user (the history's SQLite file)"
    return None


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def async_url(url: str) -> URL:
    """`url` with the asyncio driver of its database (postgresql:// → asyncpg)."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError("the history database must be PostgreSQL or SQLite")
    return parsed.set(drivername=driver)


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`. A SQLite file's directory is made if missing; the file runs in WAL
    mode, so the gateway and a local agent worker write it at the same time."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, connect_args={"timeout": STATEMENT_TIMEOUT_S})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        parsed,
        pool_size=4,
        max_overflow=4,
        pool_pre_ping=True,  # after an outage, pooled connections are dead: test them first
        pool_timeout=CONNECT_TIMEOUT_S,
        connect_args={"timeout": CONNECT_TIMEOUT_S, "command_timeout": STATEMENT_TIMEOUT_S},
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(STATEMENT_TIMEOUT_S * 1000)}")
    cursor.close()
