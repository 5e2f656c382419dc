"""Reading the history: sessions by filter (keyset-paginated), one session's turns, and the
modes compared over a window. Percentiles are computed here, the same on SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, exists, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipelines.contracts import MODES

from .models import (
    Comparison,
    ErrorView,
    LegView,
    ModeFigures,
    RoutingEventView,
    SessionDetail,
    SessionFilter,
    SessionPage,
    SessionSummary,
    ToolCallView,
    ToolOutcomes,
    TurnView,
    UtteranceView,
)
from .schema import Error, Leg, RoutingEvent, Session, ToolCall, TurnMetrics, Utterance

MAX_PAGE = 500
_STAGES = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")


class InvalidCursor(ValueError):
    """A `cursor` this history did not hand out."""


class HistoryQueries:
    """Read-only queries over one history database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def sessions(
        self, where: SessionFilter, *, limit: int = 50, cursor: str | None = None
    ) -> SessionPage:
        """One page of sessions, newest first; `next_cursor` continues after it."""
        limit = max(1, min(limit, MAX_PAGE))
        query = _filtered(where).order_by(Session.started_at.desc(), Session.id.desc())
        if cursor is not None:
            at, sid = _decode_cursor(cursor)
            query = query.where(
                or_(Session.started_at < at, and_(Session.started_at == at, Session.id < sid))
            )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query.limit(limit + 1))).all()
            page = list(rows[:limit])
            summaries = await _summaries(connection, page)
        more = len(rows) > limit
        return SessionPage(
            sessions=summaries,
            next_cursor=_encode_cursor(page[-1].started_at, page[-1].id) if more else None,
        )

    async def all_sessions(
        self, where: SessionFilter, *, page_size: int = 200
    ) -> AsyncIterator[SessionSummary]:
        """Every session `where` selects, newest first, a page at a time (exports)."""
        cursor: str | None = None
        while True:
            page = await self.sessions(where, limit=page_size, cursor=cursor)
            for summary in page.sessions:
                yield summary
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def session(self, session_id: str) -> SessionDetail | None:
        """One session with its routing events and every half's turns; None if unknown."""
        async with self._engine.connect() as connection:
            row = await connection.execute(select(Session).where(Session.id == session_id))
            found = row.first()
            if found is None:
                return None
            (summary,) = await _summaries(connection, [found])
            routing = await _all(connection, RoutingEvent, session_id, RoutingEvent.at)
            legs = await _all(connection, Leg, session_id, Leg.started_at)
            said = await _all(connection, Utterance, session_id, Utterance.at)
            tools = await _all(connection, ToolCall, session_id, ToolCall.at)
            metrics = await _all(connection, TurnMetrics, session_id, TurnMetrics.at)
            errors = await _all(connection, Error, session_id, Error.at)
        return SessionDetail(
            **summary.model_dump(),
            routing=[
                RoutingEventView(at=r.at, kind=r.kind, mode=_mode(r.mode), reason=r.reason)
                for r in routing
            ],
            legs=_legs(legs, said, tools, metrics, errors),
        )

    async def compare(self, where: SessionFilter) -> Comparison:
        """Per mode over the sessions `where` selects: sessions and fallback rate by the mode
        first issued; tool error rate and voice-to-voice p50/p95 by the mode each half ran
        in (a session that fell back counts its openai turns as openai's)."""
        chosen = _filtered(where).with_only_columns(Session.id).scalar_subquery()
        async with self._engine.connect() as connection:
            counts = await connection.execute(
                select(Session.mode, Session.fell_back, func.count())
                .where(Session.id.in_(chosen))
                .group_by(Session.mode, Session.fell_back)
            )
            tools = await connection.execute(
                select(Leg.mode, ToolCall.status, func.count())
                .join(Leg, Leg.id == ToolCall.leg_id)
                .where(ToolCall.session_id.in_(chosen))
                .group_by(Leg.mode, ToolCall.status)
            )
            v2v = await connection.execute(
                select(Leg.mode, TurnMetrics.voice_to_voice_ms)
                .join(Leg, Leg.id == TurnMetrics.leg_id)
                .where(
                    TurnMetrics.session_id.in_(chosen), TurnMetrics.voice_to_voice_ms.is_not(None)
                )
            )
            sessions: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for mode, fell_back, count in counts:
                if mode is None:
                    continue
                sessions[mode][0] += count
                sessions[mode][1] += count if fell_back else 0
            calls: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for mode, status, count in tools:
                calls[mode][0] += count
                calls[mode][1] += count if status == "error" else 0
            latencies: dict[str, list[float]] = defaultdict(list)
            for mode, value in v2v:
                latencies[mode].append(float(value or 0.0))
        figures = []
        for mode in MODES:
            total, fell = sessions.get(mode, [0, 0])
            made, failed = calls.get(mode, [0, 0])
            values = sorted(latencies.get(mode, []))
            figures.append(
                ModeFigures(
                    mode=mode,
                    sessions=total,
                    fell_back=fell,
                    fallback_rate=_rate(fell, total),
                    tool_calls=made,
                    tool_errors=failed,
                    tool_error_rate=_rate(failed, made),
                    turns=len(values),
                    voice_to_voice_p50_ms=percentile(values, 50),
                    voice_to_voice_p95_ms=percentile(values, 95),
                )
            )
        return Comparison(since=where.since, until=where.until, modes=figures)


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * pct / 100
    low, high = math.floor(position), math.ceil(position)
    value = sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
    return round(value, 1)


def _filtered(where: SessionFilter) -> Select[Any]:
    query = select(Session)
    conditions: list[ColumnElement[bool]] = []
    if where.since is not None:
        conditions.append(Session.started_at >= where.since)
    if where.until is not None:
        conditions.append(Session.started_at < where.until)
    if where.mode is not None:
        conditions.append(Session.mode == where.mode)
    if where.reason is not None:
        conditions.append(Session.reason == where.reason)
    if where.user is not None:
        conditions.append(func.lower(Session.user_id) == where.user.strip().lower())
    if where.fell_back is not None:
        conditions.append(Session.fell_back == (true() if where.fell_back else false()))
    if where.tool_error is not None:
        failed = exists().where(ToolCall.session_id == Session.id, ToolCall.status == "error")
        conditions.append(failed if where.tool_error else ~failed)
    return query.where(*conditions)


async def _summaries(
    connection: AsyncConnection, sessions: Sequence[Row[Any]]
) -> list[SessionSummary]:
    """Summaries of `sessions`, with their counts read in one query per table."""
    ids = [s.id for s in sessions]
    turns: dict[str, set[tuple[str, int]]] = defaultdict(set)
    tools: dict[str, ToolOutcomes] = defaultdict(ToolOutcomes)
    errors: dict[str, int] = defaultdict(int)
    v2v: dict[str, list[float]] = defaultdict(list)
    modes: dict[str, list[str]] = defaultdict(list)
    if ids:
        for table in (Utterance, TurnMetrics, ToolCall):
            rows = await connection.execute(
                select(table.session_id, table.leg_id, table.turn).where(
                    table.session_id.in_(ids), table.turn > 0
                )
            )
            for sid, leg, turn in rows:
                turns[sid].add((leg, turn))
        for sid, status, count in await connection.execute(
            select(ToolCall.session_id, ToolCall.status, func.count())
            .where(ToolCall.session_id.in_(ids))
            .group_by(ToolCall.session_id, ToolCall.status)
        ):
            setattr(tools[sid], "error" if status == "error" else "ok", count)
        for sid, count in await connection.execute(
            select(Error.session_id, func.count())
            .where(Error.session_id.in_(ids))
            .group_by(Error.session_id)
        ):
            errors[sid] = count
        for sid, value in await connection.execute(
            select(TurnMetrics.session_id, TurnMetrics.voice_to_voice_ms).where(
                TurnMetrics.session_id.in_(ids), TurnMetrics.voice_to_voice_ms.is_not(None)
            )
        ):
            v2v[sid].append(float(value or 0.0))
        for sid, mode in await connection.execute(
            select(Leg.session_id, Leg.mode)
            .where(Leg.session_id.in_(ids))
            .order_by(Leg.started_at, Leg.id)
        ):
            modes[sid].append(mode)
    return [
        SessionSummary(
            id=s.id,
            user=s.user_id,
            mode=_mode(s.mode),
            reason=s.reason,
            modes=[m for m in (_mode(x) for x in modes[s.id]) if m is not None],
            started_at=s.started_at,
            ended_at=s.ended_at,
            duration_s=round((s.ended_at - s.started_at).total_seconds(), 1)
            if s.ended_at is not None
            else None,
            close_reason=s.close_reason,
            fell_back=s.fell_back,
            fallback_reason=s.fallback_reason,
            turns=len(turns[s.id]),
            tool_calls=tools[s.id].model_copy(),
            errors=errors[s.id],
            voice_to_voice_p50_ms=percentile(sorted(v2v[s.id]), 50),
        )
        for s in sessions
    ]


async def _all(
    connection: AsyncConnection, model: Any, session_id: str, order: Any
) -> list[Row[Any]]:
    result = await connection.execute(
        select(model).where(model.session_id == session_id).order_by(order, model.id)
    )
    return list(result.all())


def _legs(
    legs: Sequence[Row[Any]],
    said: Iterable[Row[Any]],
    tools: Iterable[Row[Any]],
    metrics: Iterable[Row[Any]],
    errors: Iterable[Row[Any]],
) -> list[LegView]:
    """Each half with its turns, in order; a half whose start record was lost still shows."""
    turns: dict[str, dict[int, TurnView]] = defaultdict(dict)

    def turn(leg_id: str, number: int) -> TurnView:
        found = turns[leg_id].get(number)
        if found is None:
            found = turns[leg_id][number] = TurnView(
                turn=number, said=[], tool_calls=[], errors=[]
            )
        return found

    for u in said:
        turn(u.leg_id, u.turn).said.append(
            UtteranceView(at=u.at, role=u.role, text=u.text, chars=u.chars)
        )
    for t in tools:
        turn(t.leg_id, t.turn).tool_calls.append(
            ToolCallView(
                at=t.at,
                call_id=t.call_id,
                name=t.name,
                arguments=_json(t.arguments),
                status=t.status,
                duration_ms=t.duration_ms,
                idempotency_key=t.idempotency_key,
                output=t.output,
            )
        )
    for m in metrics:
        view = turn(m.leg_id, m.turn)
        for stage in _STAGES:
            setattr(view, stage, getattr(m, stage))
    loose: dict[str, list[ErrorView]] = defaultdict(list)
    for e in errors:
        error = ErrorView(at=e.at, code=e.code, message=e.message, fatal=e.fatal)
        if e.leg_id is not None and e.turn is not None:
            turn(e.leg_id, e.turn).errors.append(error)
        else:
            loose[e.leg_id or ""].append(error)
    views = [
        LegView(
            id=leg.id,
            mode=_mode(leg.mode),
            started_at=leg.started_at,
            ended_at=leg.ended_at,
            close_reason=leg.close_reason,
            turns=[turns[leg.id][n] for n in sorted(turns[leg.id])],
            errors=loose.pop(leg.id, []),
        )
        for leg in legs
    ]
    known = {leg.id for leg in legs}
    for leg_id in sorted(set(turns) - known):
        views.append(
            LegView(
                id=leg_id,
                mode=None,
                started_at=None,
                ended_at=None,
                close_reason=None,
                turns=[turns[leg_id][n] for n in sorted(turns[leg_id])],
                errors=loose.pop(leg_id, []),
            )
        )
    return views


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _mode(value: str | None) -> Any:
    return value if value in MODES else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _encode_cursor(at: datetime, session_id: str) -> str:
    raw = json.dumps([at.isoformat(), session_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, sid = json.loads(raw)
        return datetime.fromisoformat(at), str(sid)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidCursor("the cursor is not one this history handed out") from None
