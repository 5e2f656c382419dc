"""The recorder on both databases: what is recorded comes back as one session with its halves,
turns, tool calls and errors; what transcripts=false leaves out; a full queue drops and counts
without ever waiting; a batch the database refuses is dropped, not retried forever."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from history import History, HistoryConfig, HistoryQueries, Recorder, SessionFilter
from history.batch import (
    ENDED,
    FALLBACK,
    ISSUED,
    LEG,
    METRICS,
    SAID,
    TOOL,
    Record,
    build_rows,
    write_rows,
)
from history.database import create_engine
from history.migrate import migrate
from pipelines.contracts import MetricsTurn, ToolResult, VoiceError
from tests.postgres_server import PostgresServer
from tests.stack import metric

EMAIL = {"to": "bob@example.com", "subject": "Budget", "body": "The numbers for Q3"}


def _tool(call_id: str, status: str = "ok", output: str = '{"sent":true}') -> ToolResult:
    return ToolResult.model_validate(
        {"call_id": call_id, "name": "send_email", "status": status, "output": output,
         "duration_ms": 240.0}
    )  # fmt: skip


def _fallen_back_session(recorder: Any) -> None:
    """A livekit session whose page fell back to openai, as the gateway, the worker and the
    relay record it."""
    recorder.session_issued(session_id="s1", user="Ann@Example.com", mode="livekit",
                            reason="rollout")  # fmt: skip
    agent = recorder.open(session_id="s1", mode="livekit", user="Ann@Example.com")
    agent.user_said(1, "Send Bob the budget")
    agent.tool_called(1, _tool("call_1"), EMAIL)
    agent.agent_said(1, "One moment.")
    agent.agent_said(1, "I sent Bob the budget.")
    agent.turn_metrics(1, MetricsTurn(eou_ms=210.0, stt_ms=180.0, llm_ttft_ms=190.0,
                                      tts_ttfb_ms=160.0, voice_to_voice_ms=610.0))  # fmt: skip
    agent.error(VoiceError(code="tts_error", message="speech synthesis failed", fatal=True), 1)
    agent.ended("error")
    recorder.fallback_reported(session_id="s1", reason="room_disconnected: gone")
    recorder.session_issued(session_id="s1", user="Ann@Example.com", mode="openai",
                            reason="fallback")  # fmt: skip
    relay = recorder.open(session_id="s1", mode="openai", user="Ann@Example.com")
    relay.user_said(1, "Did it go?")
    relay.agent_said(1, "Yes.")
    relay.turn_metrics(1, MetricsTurn(eou_ms=40.0, voice_to_voice_ms=900.0))
    relay.tool_called(1, _tool("call_2", "error", "The send_email tool did not work"), EMAIL)
    relay.ended("client gone")


async def test_a_fallen_back_session_shows_both_halves(history: History) -> None:
    _fallen_back_session(history.recorder)
    await history.recorder.flush()

    detail = await history.queries.session("s1")
    assert detail is not None
    assert (detail.user, detail.mode, detail.reason) == ("Ann@Example.com", "livekit", "rollout")
    assert detail.modes == ["livekit", "openai"]
    assert detail.fell_back and detail.fallback_reason == "room_disconnected: gone"
    assert detail.close_reason == "client gone"  # the half that ended last
    assert detail.ended_at is not None and detail.ended_at >= detail.started_at
    assert [(r.kind, r.mode, r.reason) for r in detail.routing] == [
        ("issued", "livekit", "rollout"),
        ("fallback", None, "room_disconnected: gone"),
        ("issued", "openai", "fallback"),
    ]
    agent, relay = detail.legs
    assert (agent.mode, agent.close_reason, relay.mode, relay.close_reason) == (
        "livekit", "error", "openai", "client gone"
    )  # fmt: skip
    (turn,) = agent.turns
    assert [(s.role, s.text, s.chars) for s in turn.said] == [
        ("user", "Send Bob the budget", 19),
        ("agent", "One moment.", 11),
        ("agent", "I sent Bob the budget.", 22),
    ]
    (call,) = turn.tool_calls
    assert (call.name, call.status, call.arguments, call.output) == (
        "send_email", "ok", EMAIL, '{"sent":true}'
    )  # fmt: skip
    assert call.idempotency_key == "s1:call_1" and call.duration_ms == 240.0
    assert call.at < turn.said[1].at  # it started duration_ms before it was recorded
    assert (turn.eou_ms, turn.stt_ms, turn.llm_ttft_ms, turn.tts_ttfb_ms) == (210, 180, 190, 160)
    assert turn.voice_to_voice_ms == 610.0
    assert [(e.code, e.fatal) for e in turn.errors] == [("tts_error", True)]
    assert relay.turns[0].tool_calls[0].status == "error"

    (summary,) = (await history.queries.sessions(SessionFilter())).sessions
    assert summary.turns == 2
    assert (summary.tool_calls.ok, summary.tool_calls.error, summary.errors) == (1, 1, 1)
    assert summary.voice_to_voice_p50_ms == 755.0  # the median of 610 and 900


async def test_without_transcripts_everything_but_the_text_is_kept(database_url: str) -> None:
    history = History(HistoryConfig(url=database_url, transcripts=False), retention=False)
    history.start()
    try:
        _fallen_back_session(history.recorder)
        await history.recorder.flush()
        detail = await history.queries.session("s1")
    finally:
        await history.aclose()
    assert detail is not None
    turn = detail.legs[0].turns[0]
    assert [(s.role, s.text, s.chars) for s in turn.said] == [
        ("user", None, 19), ("agent", None, 11), ("agent", None, 22)
    ]  # fmt: skip
    (call,) = turn.tool_calls
    assert call.arguments == {"body": None, "subject": None, "to": None}
    assert call.output is None
    assert (call.name, call.status, call.idempotency_key) == ("send_email", "ok", "s1:call_1")
    assert turn.voice_to_voice_ms == 610.0 and detail.fallback_reason == "room_disconnected: gone"


async def test_a_batch_written_twice_adds_nothing(database_url: str) -> None:
    """After an outage the writer retries the batch it held; the ids were made before the first
    attempt, so a batch whose commit did happen is not recorded twice."""
    at = 1_800_000_000.0
    records: list[Record] = [
        (ISSUED, at, "s1", "ann", "livekit", "rollout"),
        (LEG, at, "leg1", "s1", "livekit", "ann"),
        (SAID, at, "leg1", "s1", 1, "user", "Send Bob the budget"),
        (TOOL, at, "leg1", "s1", 1, _tool("call_1"), EMAIL),
        (METRICS, at, "leg1", "s1", 1, MetricsTurn(voice_to_voice_ms=600.0)),
        (FALLBACK, at, "s1", "ice failed"),
        (ENDED, at + 1, "leg1", "s1", "livekit", at, "error"),
    ]
    rows = build_rows(records, transcripts=True)
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        for _ in range(2):
            async with engine.begin() as connection:
                await write_rows(connection, rows)
        detail = await HistoryQueries(engine).session("s1")
    finally:
        await engine.dispose()
    assert detail is not None
    assert len(detail.routing) == 2 and len(detail.legs) == 1
    (turn,) = detail.legs[0].turns
    assert (len(turn.said), len(turn.tool_calls), turn.voice_to_voice_ms) == (1, 1, 600.0)
    assert (detail.legs[0].close_reason, detail.close_reason, detail.fell_back) == (
        "error", "error", True
    )  # fmt: skip


async def test_a_full_queue_drops_counts_and_recovers(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(database_url)
    recorder = Recorder(engine, capacity=5, migrate_first=True)
    dropped_before = metric("voicegw_history_dropped_total", reason="queue_full")
    caplog.set_level(logging.WARNING, logger="voicegw.history")
    try:
        for n in range(8):  # the writer has not run yet: nothing leaves the queue
            recorder.session_issued(session_id=f"q{n}", user=None, mode="openai",
                                    reason="default")  # fmt: skip
        assert recorder.health().state == "degraded"
        assert recorder.health().dropped == 3
        assert metric("voicegw_history_dropped_total", reason="queue_full") == dropped_before + 3
        assert metric("voicegw_history_up") == 0
        recorder.start()
        await recorder.flush()
        assert recorder.health().state == "ok" and recorder.health().queued == 0
        assert metric("voicegw_history_up") == 1
        page = await HistoryQueries(engine).sessions(SessionFilter())
    finally:
        await recorder.aclose()
        await engine.dispose()
    assert sorted(s.id for s in page.sessions) == ["q0", "q1", "q2", "q3", "q4"]
    said = [(r.getMessage(), getattr(r, "dropped", None)) for r in caplog.records]
    assert said == [
        ("history recording degraded", None),  # once, however many were dropped
        ("history recording recovered", 3),
    ]


async def test_a_batch_the_database_refuses_is_dropped_and_the_rest_written(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A record no PostgreSQL column holds (a mode longer than its column) costs its batch,
    counted as rejected; the writer goes on with the next."""
    history = History(HistoryConfig(url=await postgres.new_database()), retention=False)
    history.start()
    rejected_before = metric("voicegw_history_dropped_total", reason="rejected")
    try:
        history.recorder.session_issued(
            session_id="bad", user=None, mode="x" * 40, reason="default"  # type: ignore[arg-type]
        )
        await history.recorder.flush()
        history.recorder.session_issued(session_id="good", user=None, mode="openai",
                                        reason="default")  # fmt: skip
        await history.recorder.flush()
        page = await history.queries.sessions(SessionFilter())
    finally:
        await history.aclose()
    assert [s.id for s in page.sessions] == ["good"]
    assert metric("voicegw_history_dropped_total", reason="rejected") == rejected_before + 1
    assert "history batch rejected by the database" in caplog.text


async def test_text_with_nul_characters_is_kept_without_them(history: History) -> None:
    """PostgreSQL refuses NUL in text (and with it the whole batch): the writer leaves it out."""
    leg = history.recorder.open(session_id="nul", mode="openai")
    leg.user_said(1, "a\x00b")
    leg.tool_called(1, _tool("c\x00", output="x\x00y"), "{not json\x00")
    await history.recorder.flush()
    detail = await history.queries.session("nul")
    assert detail is not None
    turn = detail.legs[0].turns[0]
    assert turn.said[0].text == "ab"
    assert (turn.tool_calls[0].output, turn.tool_calls[0].arguments) == ("xy", "{not json")
    assert json.dumps(detail.model_dump(mode="json"))  # the whole session reads back


async def test_nothing_is_recorded_for_a_half_after_it_ended(history: History) -> None:
    leg = history.recorder.open(session_id="late", mode="openai")
    leg.ended("client gone")
    leg.user_said(1, "too late")
    leg.ended("again")
    await history.recorder.flush()
    detail = await history.queries.session("late")
    assert detail is not None
    assert detail.legs[0].turns == [] and detail.close_reason == "client gone"
