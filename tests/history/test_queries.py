"""Queries on both databases: every filter, keyset pages that neither skip nor repeat, a cursor
nobody handed out, the modes compared, and the times people type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from history import History, HistoryConfig, InvalidCursor, SessionFilter, parse_when
from history.queries import percentile
from pipelines.contracts import MetricsTurn, ToolResult
from tests.stack import FakeClock

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _call(status: str) -> ToolResult:
    return ToolResult.model_validate(
        {"call_id": f"c-{status}", "name": "send_email", "status": status, "output": "x",
         "duration_ms": 100.0}
    )  # fmt: skip


@pytest.fixture
async def history_of_eight(database_url: str) -> AsyncIterator[History]:
    """Eight sessions a minute apart: livekit (rollout, allowlist) and openai (default,
    url_flag); s3 fell back to openai; s2 and s6 had a failed tool call."""
    clock = FakeClock()
    clock.now = T0
    history = History(HistoryConfig(url=database_url), retention=False, clock=clock)
    history.start()
    recorder = history.recorder
    plan = [
        ("s0", "ann@example.com", "livekit", "rollout", [500.0, 700.0], None),
        ("s1", "bob@example.com", "openai", "default", [900.0], "ok"),
        ("s2", "ANN@example.com", "livekit", "allowlist", [600.0], "error"),
        ("s3", "cy@example.com", "livekit", "rollout", [650.0], None),
        ("s4", None, "openai", "url_flag", [1000.0, 1100.0], "ok"),
        ("s5", "bob@example.com", "openai", "default", [], None),
        ("s6", "cy@example.com", "openai", "default", [800.0], "error"),
        ("s7", "ann@example.com", "livekit", "rollout", [400.0], "ok"),
    ]
    for sid, user, mode, reason, v2v, tool in plan:
        recorder.session_issued(session_id=sid, user=user, mode=mode, reason=reason)  # type: ignore[arg-type]
        leg = recorder.open(session_id=sid, mode=mode, user=user)  # type: ignore[arg-type]
        for turn, value in enumerate(v2v, 1):
            leg.user_said(turn, "hello")
            leg.turn_metrics(turn, MetricsTurn(voice_to_voice_ms=value))
        if tool is not None:
            leg.tool_called(1, _call(tool), {"to": "x"})
        clock.advance(30)
        if sid == "s3":
            leg.ended("error")
            recorder.fallback_reported(session_id=sid, reason="agent_timeout: 8 s")
            recorder.session_issued(session_id=sid, user=user, mode="openai", reason="fallback")
            relay = recorder.open(session_id=sid, mode="openai", user=user)
            relay.user_said(1, "still there?")
            relay.turn_metrics(1, MetricsTurn(voice_to_voice_ms=950.0))
            relay.tool_called(1, _call("ok"), {})
            relay.ended("client gone")
        else:
            leg.ended("client gone")
        clock.advance(30)
    await recorder.flush()
    try:
        yield history
    finally:
        await history.aclose()


async def _ids(history: History, **where: object) -> list[str]:
    page = await history.queries.sessions(SessionFilter(**where), limit=100)  # type: ignore[arg-type]
    return [s.id for s in page.sessions]


async def test_every_filter(history_of_eight: History) -> None:
    h = history_of_eight
    at = datetime.fromtimestamp(T0, UTC)
    assert await _ids(h) == ["s7", "s6", "s5", "s4", "s3", "s2", "s1", "s0"]  # newest first
    assert await _ids(h, mode="livekit") == ["s7", "s3", "s2", "s0"]
    assert await _ids(h, reason="default") == ["s6", "s5", "s1"]
    assert await _ids(h, user="ann@EXAMPLE.com ") == ["s7", "s2", "s0"]
    assert await _ids(h, fell_back=True) == ["s3"]
    assert "s3" not in await _ids(h, fell_back=False)
    assert await _ids(h, tool_error=True) == ["s6", "s2"]
    assert await _ids(h, tool_error=False) == ["s7", "s5", "s4", "s3", "s1", "s0"]
    since, until = at + timedelta(minutes=2), at + timedelta(minutes=5)
    assert await _ids(h, since=since, until=until) == ["s4", "s3", "s2"]
    assert await _ids(h, mode="openai", since=since, tool_error=False) == ["s5", "s4"]


async def test_summaries_say_what_happened(history_of_eight: History) -> None:
    page = await history_of_eight.queries.sessions(SessionFilter(), limit=100)
    by_id = {s.id: s for s in page.sessions}
    s3 = by_id["s3"]
    assert (s3.mode, s3.reason, s3.modes, s3.fell_back) == (
        "livekit", "rollout", ["livekit", "openai"], True
    )  # fmt: skip
    assert (s3.fallback_reason, s3.close_reason) == ("agent_timeout: 8 s", "client gone")
    assert s3.turns == 2
    assert s3.voice_to_voice_p50_ms == 800.0
    assert by_id["s4"].duration_s == 30.0 and by_id["s4"].user is None
    assert (by_id["s6"].tool_calls.ok, by_id["s6"].tool_calls.error) == (0, 1)
    assert by_id["s5"].voice_to_voice_p50_ms is None and by_id["s5"].turns == 0


async def test_pages_follow_each_other(history_of_eight: History) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        page = await history_of_eight.queries.sessions(SessionFilter(), limit=3, cursor=cursor)
        seen += [s.id for s in page.sessions]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["s7", "s6", "s5", "s4", "s3", "s2", "s1", "s0"]
    everything = [s.id async for s in history_of_eight.queries.all_sessions(SessionFilter(),
                                                                          page_size=2)]  # fmt: skip
    assert everything == seen
    with pytest.raises(InvalidCursor):
        await history_of_eight.queries.sessions(SessionFilter(), cursor="not-a-cursor")


async def test_compare_per_mode(history_of_eight: History) -> None:
    comparison = await history_of_eight.queries.compare(SessionFilter())
    livekit, openai = comparison.modes
    assert (livekit.mode, livekit.sessions, livekit.fell_back, livekit.fallback_rate) == (
        "livekit", 4, 1, 0.25
    )  # fmt: skip
    # tool calls by the mode each half ran in: s3's openai half made one of openai's
    assert (livekit.tool_calls, livekit.tool_errors, livekit.tool_error_rate) == (2, 1, 0.5)
    assert (openai.tool_calls, openai.tool_errors, openai.tool_error_rate) == (4, 1, 0.25)
    assert (openai.sessions, openai.fell_back, openai.fallback_rate) == (4, 0, 0.0)
    # livekit halves: 500, 700, 600, 650, 400; openai halves: 900, 1000, 1100, 800, and s3's 950
    assert (livekit.turns, livekit.voice_to_voice_p50_ms, livekit.voice_to_voice_p95_ms) == (
        5, 600.0, 690.0
    )  # fmt: skip
    assert (openai.turns, openai.voice_to_voice_p50_ms, openai.voice_to_voice_p95_ms) == (
        5, 950.0, 1080.0
    )  # fmt: skip
    window = SessionFilter(since=datetime.fromtimestamp(T0 + 300, UTC))
    late = await history_of_eight.queries.compare(window)
    assert [(m.mode, m.sessions) for m in late.modes] == [("livekit", 1), ("openai", 2)]


async def test_an_unknown_session_is_none(history_of_eight: History) -> None:
    assert await history_of_eight.queries.session("nobody") is None


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == 3.9  # numpy: 3.85, to a tenth of a ms


def test_times_people_type() -> None:
    now = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when(" 24H", now) == now - timedelta(hours=24)
    assert parse_when("30m", now) == now - timedelta(minutes=30)
    assert parse_when("2w", now) == now - timedelta(weeks=2)
    assert parse_when("2027-01-10", now) == datetime(2027, 1, 10, tzinfo=UTC)
    assert parse_when("2027-01-10T09:30:00Z") == datetime(2027, 1, 10, 9, 30, tzinfo=UTC)
    assert parse_when("2027-01-10T09:30:00+02:00") == datetime(2027, 1, 10, 7, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="7d, 24h, 30m"):
        parse_when("last tuesday", now)
