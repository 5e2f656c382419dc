"""The recorder: what callers record goes into a bounded queue; one background task writes it
in batches. Never in the audio path.

A call to the recorder (or to a session's `SessionHistory`) appends one tuple to a deque and
returns: no await, no I/O, no lock, nothing that grows with the database's trouble. The writer
wakes every `flush_interval_s` (or when a batch is full), takes up to `batch_size` records,
turns them into rows (`history/batch.py`) and writes them in one transaction. Once a second:
each write costs the event loop a millisecond or two of SQLAlchemy and driver work however
small it is, so the write rate, not the record rate, is what shows in the relay's frame-pair
tail (`bench/history_overhead.py`: at 4 writes a second its p95 rose by a tenth to a half).

When the database fails (refused, reset, slower than its timeouts) the writer keeps the batch
it holds and tries again every `retry_s`; meanwhile the queue fills and what no longer fits is
dropped and counted (`voicegw_history_dropped_total{reason="queue_full"}`). Trouble is logged
once when it starts and once when it ends (`history recording degraded` / `... recovered`, with
how long and how much was dropped), shows in `/readyz` (`history.state` `degraded`) and in
`voicegw_history_up`; recording resumes by itself. A batch the database refuses for its
content (not for being down) is dropped, counted as `rejected`, so one bad record never stops
the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.contracts import MetricsTurn, Mode, Reason, ToolResult, VoiceError
from pipelines.contracts.history import SessionHistory
from pipelines.contracts.metrics import HISTORY_DROPPED, HISTORY_UP

from .batch import (
    ENDED,
    ERROR,
    FALLBACK,
    ISSUED,
    LEG,
    METRICS,
    SAID,
    TOOL,
    Record,
    Rows,
    build_rows,
    new_id,
    write_rows,
)
from .migrate import migrate

log = logging.getLogger("voicegw.history")

HistoryState = Literal["ok", "degraded"]

# What "the database is unavailable" looks like through SQLAlchemy, asyncpg and aiosqlite: try
# again later. Anything else the database raises is about the batch itself.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    ConnectionError,
)
# SQLSTATE classes PostgreSQL answers with when the server, not the batch, is the trouble:
# connection exception (08), operator intervention (57: a statement cancelled by an
# administrator or a statement timeout, a connection terminated, the server shutting down),
# insufficient resources (53), a transaction to roll back and try again (40: serialization
# failure, deadlock).
_UNAVAILABLE_SQLSTATES = ("08", "57", "53", "40")
WRITE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class HistoryHealth:
    state: HistoryState
    queued: int
    dropped: int  # since the process started
    detail: str | None


class Recorder:
    """The process's `HistoryRecorder` (pipelines/contracts/history.py), writing to `engine`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        transcripts: bool = True,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        retry_s: float = 1.0,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        migrate_first: bool = False,
        autostart: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`capacity` bounds the queue (records beyond it are dropped); a write that takes
        longer than `write_timeout_s` counts as the database being unavailable;
        `migrate_first` brings the schema to head before the first write (the gateway does, a
        job process does not);
        `autostart`: the first half opened starts the writer (a job process has no other
        moment to); `clock` gives epoch seconds (tests)."""
        self._engine = engine
        self._transcripts = transcripts
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_s = retry_s
        self._write_timeout_s = write_timeout_s
        self._migrate = migrate_first
        self._autostart = autostart
        self.clock = clock
        self._queue: deque[Record] = deque()
        self._held: Rows | None = None  # a batch waiting for the database to come back
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempt: asyncio.Task[None] | None = None
        self._closing = False
        self._accepted = 0
        self._settled = 0
        self.dropped = 0
        self._trouble_since: float | None = None
        self._trouble_dropped = 0
        self._detail: str | None = None

    # -- HistoryRecorder -------------------------------------------------------------------

    def session_issued(
        self, *, session_id: str, user: str | None, mode: Mode, reason: Reason
    ) -> None:
        self._put((ISSUED, self.clock(), session_id, user, mode, reason))

    def fallback_reported(self, *, session_id: str, reason: str) -> None:
        self._put((FALLBACK, self.clock(), session_id, reason))

    def open(self, *, session_id: str, mode: Mode, user: str | None = None) -> SessionHistory:
        if self._autostart:
            self.start()
        leg = _Leg(self, new_id(), session_id, mode, self.clock())
        self._put((LEG, leg.started_at, leg.id, session_id, mode, user))
        return leg

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every record accepted so far is written or dropped, at most `timeout_s`
        (a database that is down holds records until it is back)."""
        if self._task is None or self._task.done():
            return
        target = self._accepted
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._settled < target:
                    self._progress.clear()
                    await self._progress.wait()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer on the running loop (once; records queued before are kept)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (at most `timeout_s`), then stop. What is left is dropped."""
        if self._task is None:
            return
        await self.flush(timeout_s)
        self._closing = True
        self._wake.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._attempt is not None and not self._attempt.done():
            self._attempt.cancel()
            await asyncio.wait({self._attempt}, timeout=timeout_s)
        left = len(self._queue) + (self._held.records if self._held else 0)
        if left:
            self._drop(left, "queue_full")
            log.warning("history records dropped at shutdown", extra={"dropped": left})
        self._queue.clear()
        self._held = None

    def health(self) -> HistoryHealth:
        state: HistoryState = "ok" if self._trouble_since is None else "degraded"
        return HistoryHealth(state, len(self._queue), self.dropped, self._detail)

    # -- the queue -------------------------------------------------------------------------

    def _put(self, record: Record) -> None:
        if len(self._queue) >= self._capacity:
            self._trouble("queue full")
            self._drop(1, "queue_full")
            return
        self._queue.append(record)
        self._accepted += 1
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._trouble_dropped += count
        self._settled += count
        HISTORY_DROPPED.labels(reason=reason).inc(count)
        self._progress.set()

    # -- the writer ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            if not self._queue and self._held is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval_s):
                        await self._wake.wait()
            self._wake.clear()
            if not await self._write_one():
                await asyncio.sleep(self._retry_s)  # the database is unavailable

    async def _write_one(self) -> bool:
        """Write the held batch, or the next one; False when the database is unavailable."""
        if self._attempt is not None and not self._attempt.done():
            return False  # a timed-out attempt is still winding down: never two at once
        rows = self._held
        if rows is None:
            if not self._queue:
                return True
            count = min(len(self._queue), self._batch_size)
            batch = [self._queue.popleft() for _ in range(count)]
            rows = build_rows(batch, transcripts=self._transcripts)
        # The attempt is a task of its own: when the database hangs, the writer stops waiting
        # for it after `write_timeout_s` even if its cancellation (a rollback on the hung
        # connection) takes longer to finish.
        self._attempt = attempt = asyncio.create_task(self._write(rows), name="history-write")
        done, _ = await asyncio.wait({attempt}, timeout=self._write_timeout_s)
        if not done:
            attempt.cancel()
            attempt.add_done_callback(_retrieve)
            self._held = rows
            self._trouble("database unavailable: TimeoutError")
            return False
        try:
            attempt.result()
        except _UNAVAILABLE as exc:
            self._held = rows
            self._trouble(f"database unavailable: {_name(exc)}")
            return False
        except ProgrammingError as exc:  # e.g. no tables yet: a migration will fix it
            self._held = rows
            self._trouble(f"database not ready: {_name(exc)}")
            return False
        except DBAPIError as exc:
            if _unavailable(exc):
                self._held = rows
                self._trouble(f"database unavailable: {_name(exc)}")
                return False
            self._held = None
            self._drop(rows.records, "rejected")
            log.error(
                "history batch rejected by the database",
                extra={"records": rows.records, "error": _name(exc)},
            )
            return True
        self._held = None
        self._settled += rows.records
        self._progress.set()
        if self._trouble_since is not None and len(self._queue) < self._capacity:
            self._recovered()
        return True

    async def _write(self, rows: Rows) -> None:
        if self._migrate:
            await migrate(self._engine)
            self._migrate = False
        async with self._engine.begin() as connection:
            await write_rows(connection, rows)

    def _trouble(self, why: str) -> None:
        if self._trouble_since is not None:
            return
        self._trouble_since = time.monotonic()
        self._trouble_dropped = 0
        self._detail = why
        HISTORY_UP.set(0)
        log.warning(
            "history recording degraded",
            extra={"why": why, "queued": len(self._queue), "capacity": self._capacity},
        )

    def _recovered(self) -> None:
        assert self._trouble_since is not None
        log.warning(
            "history recording recovered",
            extra={
                "outage_s": round(time.monotonic() - self._trouble_since, 1),
                "dropped": self._trouble_dropped,
            },
        )
        self._trouble_since = None
        self._detail = None
        HISTORY_UP.set(1)


class _Leg:
    """One half of a session (`SessionHistory`): each call queues one tuple."""

    __slots__ = ("_put", "_recorder", "ended_reason", "id", "mode", "session_id", "started_at")

    def __init__(
        self, recorder: Recorder, leg_id: str, session_id: str, mode: Mode, started_at: float
    ) -> None:
        self._recorder = recorder
        self._put = recorder._put
        self.id = leg_id
        self.session_id = session_id
        self.mode = mode
        self.started_at = started_at
        self.ended_reason: str | None = None

    def user_said(self, turn: int, text: str) -> None:
        if self.ended_reason is None:
            self._put((SAID, self._recorder.clock(), self.id, self.session_id, turn, "user", text))

    def agent_said(self, turn: int, text: str) -> None:
        if self.ended_reason is None:
            self._put((SAID, self._recorder.clock(), self.id, self.session_id, turn, "agent", text))

    def tool_called(
        self, turn: int, result: ToolResult, arguments: Mapping[str, Any] | str
    ) -> None:
        if self.ended_reason is None:
            at = self._recorder.clock()
            self._put((TOOL, at, self.id, self.session_id, turn, result, arguments))

    def turn_metrics(self, turn: int, metrics: MetricsTurn) -> None:
        if self.ended_reason is None:
            self._put((METRICS, self._recorder.clock(), self.id, self.session_id, turn, metrics))

    def error(self, error: VoiceError, turn: int | None = None) -> None:
        if self.ended_reason is None:
            self._put((ERROR, self._recorder.clock(), self.id, self.session_id, turn, error))

    def ended(self, close_reason: str) -> None:
        if self.ended_reason is None:
            self.ended_reason = close_reason
            at = self._recorder.clock()
            self._put(
                (ENDED, at, self.id, self.session_id, self.mode, self.started_at, close_reason)
            )


def _retrieve(task: asyncio.Task[None]) -> None:
    """A timed-out attempt ends however it ends; its outcome was already decided."""
    if not task.cancelled():
        task.exception()


def _unavailable(exc: DBAPIError) -> bool:
    """Whether a database error says the server cannot take the batch now (try again), rather
    than that the batch is wrong."""
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def _name(exc: BaseException) -> str:
    """What went wrong, by type only: a driver's message can carry the connection string."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    # SQLAlchemy's asyncpg adapter raises its own generic `Error` from asyncpg's precise one.
    if type(cause).__name__ == "Error" and cause.__cause__ is not None:
        cause = cause.__cause__
    return type(cause).__name__
