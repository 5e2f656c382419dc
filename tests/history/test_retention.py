"""Retention: a session not seen for HISTORY_RETENTION_DAYS goes, with every row that names it;
one seen since stays. Time is a fake clock, not waited for."""

from __future__ import annotations

import asyncio

from history import History, HistoryConfig, SessionFilter
from history.retention import prune, prune_periodically
from pipelines.contracts import MetricsTurn, ToolResult, VoiceError
from tests.stack import FakeClock

DAY = 86_400.0


def _record(history: History, session_id: str) -> None:
    recorder = history.recorder
    recorder.session_issued(session_id=session_id, user="ann", mode="openai", reason="default")
    leg = recorder.open(session_id=session_id, mode="openai")
    leg.user_said(1, "hello")
    leg.tool_called(
        1, ToolResult(call_id="c", name="send_email", status="ok", output="{}", duration_ms=1), {}
    )
    leg.turn_metrics(1, MetricsTurn(voice_to_voice_ms=500))
    leg.error(VoiceError(code="x", message="y", fatal=False), 1)
    recorder.fallback_reported(session_id=session_id, reason="r")
    leg.ended("client gone")


async def _count_rows(history: History) -> int:
    async with history.engine.connect() as connection:
        total = 0
        for table in ("routing_events", "legs", "utterances", "turn_metrics", "tool_calls",
                      "errors", "sessions"):  # fmt: skip
            result = await connection.exec_driver_sql(f"SELECT count(*) FROM {table}")
            total += int(result.scalar_one())
        return total


async def test_old_sessions_go_with_all_their_rows(database_url: str) -> None:
    clock = FakeClock()
    clock.now = 1_800_000_000.0
    history = History(
        HistoryConfig(url=database_url, retention_days=30), retention=False, clock=clock
    )
    history.start()
    try:
        _record(history, "old")
        clock.advance(20 * DAY)
        _record(history, "recent")
        await history.recorder.flush()
        rows_of_two = await _count_rows(history)

        clock.advance(10 * DAY + 1)  # "old" last seen 30 days and a second ago
        assert await prune(history.engine, retention_days=30, now=clock()) == 1
        page = await history.queries.sessions(SessionFilter())
        assert [s.id for s in page.sessions] == ["recent"]
        assert await _count_rows(history) == rows_of_two // 2
        assert await history.queries.session("old") is None

        assert await prune(history.engine, retention_days=30, now=clock()) == 0
        clock.advance(20 * DAY)
        assert await prune(history.engine, retention_days=30, now=clock()) == 1
        assert await _count_rows(history) == 0
    finally:
        await history.aclose()


async def test_the_gateway_prunes_at_start_and_on_its_interval(database_url: str) -> None:
    clock = FakeClock()
    clock.now = 1_800_000_000.0
    history = History(HistoryConfig(url=database_url), retention=False, clock=clock)
    history.start()
    try:
        _record(history, "old")
        await history.recorder.flush()
        clock.advance(31 * DAY)
        task = asyncio.create_task(
            prune_periodically(history.engine, retention_days=30, interval_s=0.01, clock=clock)
        )
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while await history.queries.session("old") is not None:
                assert asyncio.get_running_loop().time() < deadline, "never pruned"
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await history.aclose()
