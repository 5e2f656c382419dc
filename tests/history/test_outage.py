"""PostgreSQL going away and coming back, under a recorder: recording never waits for it, what
no longer fits is dropped and counted, the trouble is logged once each way, and recording
resumes by itself with what was held."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest

from history import HistoryQueries, Recorder, SessionFilter
from history.database import create_engine
from history.migrate import migrate
from tests.postgres_server import PostgresServer, running_postgres
from tests.stack import metric, until


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def _issue(recorder: Recorder, prefix: str, count: int) -> float:
    """Record `count` sessions; the longest single call, in seconds."""
    slowest = 0.0
    for n in range(count):
        started = time.perf_counter()
        recorder.session_issued(session_id=f"{prefix}{n}", user=None, mode="openai",
                                reason="default")  # fmt: skip
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_recording_survives_the_database_going_away(
    own_postgres: PostgresServer, outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voicegw.history")
    engine = create_engine(await own_postgres.new_database())
    await migrate(engine)
    recorder = Recorder(engine, capacity=20, retry_s=0.05, write_timeout_s=1.0)
    recorder.start()
    dropped_before = metric("voicegw_history_dropped_total", reason="queue_full")
    try:
        _issue(recorder, "before", 3)
        await recorder.flush()
        assert recorder.health().state == "ok"

        if outage == "stopped":
            own_postgres.stop()
        else:
            own_postgres.freeze()
        _issue(recorder, "held", 5)

        async def failing() -> bool:
            return recorder.health().state == "degraded"

        await until(failing, "the writer finds the database gone")
        assert metric("voicegw_history_up") == 0
        slowest = _issue(recorder, "during", 30)  # 20 fit in the queue, 10 do not
        assert recorder.health().dropped == 10
        assert metric("voicegw_history_dropped_total", reason="queue_full") == dropped_before + 10
        assert slowest < 0.05, "a record waited for the database"

        if outage == "stopped":
            own_postgres.start()
        else:
            own_postgres.thaw()

        async def recovered() -> bool:
            return recorder.health().state == "ok" and recorder.health().queued == 0

        await until(recovered, "recording resumes by itself", timeout_s=30)
        await recorder.flush()
        assert metric("voicegw_history_up") == 1
        ids = {s.id async for s in HistoryQueries(engine).all_sessions(SessionFilter())}
    finally:
        if own_postgres.process is not None:
            own_postgres.thaw()
        await recorder.aclose()
        await engine.dispose()
    expected = {f"before{n}" for n in range(3)} | {f"held{n}" for n in range(5)}
    expected |= {f"during{n}" for n in range(20)}
    assert ids == expected
    said = [r.getMessage() for r in caplog.records]
    assert said == ["history recording degraded", "history recording recovered"]
    (recovery,) = [r for r in caplog.records if r.getMessage() == "history recording recovered"]
    assert getattr(recovery, "dropped", None) == 10


@pytest.mark.parametrize(
    ("cut", "error"),
    [
        ("pg_cancel_backend", "QueryCanceledError"),  # SQLSTATE 57014, every time
        # 57P01 AdminShutdownError, or the closed connection if the driver sees that first
        ("pg_terminate_backend", "AdminShutdownError|ConnectionDoesNotExistError"),
    ],
)
async def test_a_write_the_server_cuts_off_is_held_and_written_again(
    postgres: PostgresServer, cut: str, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An administrator, a statement timeout or a failover cutting off the writer's statement
    in the middle of a batch is the database being unavailable, not the batch being wrong: the
    batch is held and written again, nothing is counted as rejected."""
    caplog.set_level(logging.WARNING, logger="voicegw.history")
    url = await postgres.new_database()
    engine = create_engine(url)
    await migrate(engine)
    recorder = Recorder(engine, retry_s=0.05, write_timeout_s=30.0)
    recorder.start()
    rejected_before = metric("voicegw_history_dropped_total", reason="rejected")
    admin = create_engine(url)
    try:
        async with admin.connect() as blocker:
            # The writer's insert waits on this lock; it is cut off while it waits.
            await blocker.exec_driver_sql("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
            _issue(recorder, "cut", 3)

            async with admin.connect() as watcher:
                waiting = (
                    "FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )

                async def writer_waiting() -> bool:
                    found = await watcher.exec_driver_sql(f"SELECT pid {waiting}")
                    return found.first() is not None

                await until(writer_waiting, "the writer to wait on the lock")
                done = await watcher.exec_driver_sql(f"SELECT {cut}(pid) {waiting}")
                assert done.scalars().all() == [True]
            await blocker.rollback()
        await recorder.flush(timeout_s=15)
        ids = {s.id async for s in HistoryQueries(engine).all_sessions(SessionFilter())}
    finally:
        await recorder.aclose()
        await admin.dispose()
        await engine.dispose()
    assert ids == {"cut0", "cut1", "cut2"}
    assert metric("voicegw_history_dropped_total", reason="rejected") == rejected_before
    assert recorder.health().state == "ok"
    said = [(r.getMessage(), getattr(r, "why", None)) for r in caplog.records]
    assert [message for message, _ in said] == [
        "history recording degraded",
        "history recording recovered",
    ]
    assert re.fullmatch(f"database unavailable: ({error})", str(said[0][1])), said
