"""Retention: sessions not seen for HISTORY_RETENTION_DAYS are deleted, with every row that
names them. Transcripts are personal data; nothing is kept longer than ops decided.

Every gateway replica prunes (deletes are idempotent), once at start and then every
`interval_s`; the clock is injectable so a test moves time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from .schema import SESSION_TABLES, Session, table

log = logging.getLogger("voicegw.history")

PRUNE_INTERVAL_S = 3600.0
_CHUNK = 500


async def prune(engine: AsyncEngine, *, retention_days: int, now: float) -> int:
    """Delete the sessions last seen more than `retention_days` before `now` (epoch seconds)
    and their rows; returns how many sessions went."""
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=retention_days)
    deleted = 0
    while True:
        async with engine.begin() as connection:
            ids = (
                (
                    await connection.execute(
                        select(Session.id).where(Session.last_seen_at < cutoff).limit(_CHUNK)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return deleted
            for each in SESSION_TABLES:
                column = each.c.id if each is table(Session) else each.c.session_id
                await connection.execute(delete(each).where(column.in_(ids)))
        deleted += len(ids)


async def prune_periodically(
    engine: AsyncEngine,
    *,
    retention_days: int,
    interval_s: float = PRUNE_INTERVAL_S,
    clock: Callable[[], float] = time.time,
) -> None:
    """Prune now and every `interval_s` until cancelled; a database that is down is tried again
    at the next interval."""
    while True:
        try:
            deleted = await prune(engine, retention_days=retention_days, now=clock())
        except (DBAPIError, OSError, TimeoutError) as exc:
            log.info("history not pruned", extra={"error": type(exc).__name__})
        else:
            if deleted:
                log.info(
                    "history pruned",
                    extra={"sessions": deleted, "retention_days": retention_days},
                )
        await asyncio.sleep(interval_s)
