"""PostgreSQL going away and coming back, under a recorder: recording never waits for it, what
no longer fits is dropped and counted, the trouble is logged once each way, and recording
resumes by itself with what was held."""

from __future__ import annotations

import logging
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
