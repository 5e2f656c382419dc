"""The session history: what the agent heard, said and did in every session, in a database.

`History` is one process's: its engine (PostgreSQL with DATABASE_URL, else a SQLite file), the
`Recorder` the gateway, the relay and the worker record into (through the contracts'
`HistoryRecorder` interface), the queries the admin API and `voicegw history` read with, and
the retention task. Only the composition root (`voicegw`) and the gateway import this package;
it imports the contracts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from .database import DatabaseKind, HistoryConfig, create_engine
from .models import (
    Comparison,
    ModeFigures,
    SessionDetail,
    SessionFilter,
    SessionPage,
    SessionSummary,
    parse_when,
)
from .queries import HistoryQueries, InvalidCursor
from .recorder import HistoryHealth, Recorder
from .retention import prune_periodically

__all__ = [
    "Comparison",
    "DatabaseKind",
    "History",
    "HistoryConfig",
    "HistoryHealth",
    "HistoryQueries",
    "InvalidCursor",
    "ModeFigures",
    "Recorder",
    "SessionDetail",
    "SessionFilter",
    "SessionPage",
    "SessionSummary",
    "parse_when",
]


class History:
    """One process's session history."""

    def __init__(
        self,
        config: HistoryConfig,
        *,
        migrate: bool = True,
        retention: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`migrate`: bring the schema to head before the first write (under a lock: every
        process that writes does, the gateway and each agent job process). `retention`: prune
        old sessions in the background (the gateway). `clock`: epoch seconds (tests)."""
        self.config = config
        self.engine = create_engine(config.url)
        self.recorder = Recorder(
            self.engine,
            transcripts=config.transcripts,
            capacity=config.queue_size,
            migrate_first=migrate,
            clock=clock,
        )
        self.queries = HistoryQueries(self.engine)
        self._retention = retention
        self._clock = clock
        self._pruner: asyncio.Task[None] | None = None

    @property
    def kind(self) -> DatabaseKind:
        return self.config.kind

    def start(self) -> None:
        """Start writing (and pruning) in the background; the database may still be down."""
        self.recorder.start()
        if self._retention and self._pruner is None:
            self._pruner = asyncio.create_task(
                prune_periodically(
                    self.engine, retention_days=self.config.retention_days, clock=self._clock
                ),
                name="history-retention",
            )

    def health(self) -> HistoryHealth:
        return self.recorder.health()

    async def aclose(self) -> None:
        """Write what is queued (bounded), stop, and close the database connections."""
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        await self.recorder.aclose()
        await self.engine.dispose()
