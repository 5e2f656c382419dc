"""Records, as the recorder queues them, turned into rows and written in one transaction.

The recorder's hot side only appends tuples (`Record`); everything that costs something happens
here, in the background writer: ids, clipping, JSON, what HISTORY_TRANSCRIPTS=false leaves
out. `Rows` is built once per batch, so a batch retried after an outage inserts the same ids
(and nothing twice).
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, case, func, literal, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines.contracts import MetricsTurn, ToolResult, VoiceError
from pipelines.contracts.history import idempotency_key

from .schema import (
    SESSION_ID_LENGTH,
    Error,
    Leg,
    RoutingEvent,
    Session,
    ToolCall,
    TurnMetrics,
    Utterance,
    table,
)

# What the recorder queues: (kind, epoch seconds, ...) tuples, cheap to make.
ISSUED = 1  # (ISSUED, at, session_id, user, mode, reason)
FALLBACK = 2  # (FALLBACK, at, session_id, reason)
LEG = 3  # (LEG, at, leg_id, session_id, mode, user)
SAID = 4  # (SAID, at, leg_id, session_id, turn, role, text)
TOOL = 5  # (TOOL, at, leg_id, session_id, turn, ToolResult, arguments)
METRICS = 6  # (METRICS, at, leg_id, session_id, turn, MetricsTurn)
ERROR = 7  # (ERROR, at, leg_id, session_id, turn, VoiceError)
ENDED = 8  # (ENDED, at, leg_id, session_id, mode, started_at, close_reason)

Record = tuple[Any, ...]

OUTPUT_CHARS = 1000  # n8n's answer, clipped
TEXT_CHARS = 20_000  # one utterance; a longer one is not speech
SHORT_CHARS = 500  # reasons, codes, messages, names


@dataclass
class Rows:
    """One batch as rows per table, ready to write (and to write again)."""

    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)
    ends: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    legs: list[dict[str, Any]] = field(default_factory=list)
    leg_ends: list[dict[str, Any]] = field(default_factory=list)
    inserts: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    records: int = 0
    transcripts: bool = True


def build_rows(records: Sequence[Record], *, transcripts: bool) -> Rows:
    """The rows of `records`, in their order."""
    rows = Rows(records=len(records), transcripts=transcripts)
    for record in records:
        _BUILDERS[record[0]](rows, _utc(record[1]), *record[2:])
    return rows


def _issued(rows: Rows, at: datetime, sid: str, user: str | None, mode: str, reason: str) -> None:
    _session(rows, sid, at, user=user, mode=mode, reason=reason)
    _insert(rows, RoutingEvent, sid, at=at, kind="issued", mode=mode, reason=reason)


def _fallback(rows: Rows, at: datetime, sid: str, reason: str) -> None:
    _session(rows, sid, at)
    reason = _clip(reason, SHORT_CHARS)
    rows.fallbacks.setdefault(_sid(sid), reason)
    _insert(rows, RoutingEvent, sid, at=at, kind="fallback", mode=None, reason=reason)


def _leg(rows: Rows, at: datetime, leg_id: str, sid: str, mode: str, user: str | None) -> None:
    _session(rows, sid, at, user=user, mode=mode)
    rows.legs.append(
        {
            "id": leg_id,
            "session_id": _sid(sid),
            "mode": mode,
            "started_at": at,
            "ended_at": None,
            "close_reason": None,
        }
    )


def _said(
    rows: Rows, at: datetime, leg_id: str, sid: str, turn: int, role: str, text: str
) -> None:
    _session(rows, sid, at)
    kept = _clip(text, TEXT_CHARS) if rows.transcripts else None
    _insert(rows, Utterance, sid, leg_id=leg_id, turn=turn, at=at, role=role, text=kept,
            chars=len(text))  # fmt: skip


def _tool(
    rows: Rows,
    at: datetime,
    leg_id: str,
    sid: str,
    turn: int,
    result: ToolResult,
    arguments: Mapping[str, Any] | str,
) -> None:
    _session(rows, sid, at)
    transcripts = rows.transcripts
    _insert(
        rows,
        ToolCall,
        sid,
        leg_id=leg_id,
        turn=turn,
        at=datetime.fromtimestamp(at.timestamp() - result.duration_ms / 1000, UTC),  # started
        call_id=_clip(result.call_id, SHORT_CHARS),
        name=_clip(result.name, SHORT_CHARS),
        arguments=_arguments(arguments, transcripts),
        status=result.status,
        duration_ms=result.duration_ms,
        idempotency_key=_clip(
            result.idempotency_key or idempotency_key(sid, result.call_id), SHORT_CHARS * 2
        ),
        output=_clip(result.output, OUTPUT_CHARS) if transcripts else None,
    )


def _metrics(
    rows: Rows, at: datetime, leg_id: str, sid: str, turn: int, metrics: MetricsTurn
) -> None:
    _session(rows, sid, at)
    stages = metrics.model_dump(exclude={"type"})
    _insert(rows, TurnMetrics, sid, leg_id=leg_id, turn=turn, at=at, **stages)


def _error(
    rows: Rows, at: datetime, leg_id: str, sid: str, turn: int | None, error: VoiceError
) -> None:
    _session(rows, sid, at)
    code, message = _clip(error.code, SHORT_CHARS), _clip(error.message, SHORT_CHARS)
    _insert(rows, Error, sid, leg_id=leg_id, turn=turn, at=at, fatal=error.fatal, code=code,
            message=message)  # fmt: skip


def _ended(
    rows: Rows,
    at: datetime,
    leg_id: str,
    sid: str,
    mode: str,
    started_at: float,
    close_reason: str,
) -> None:
    _session(rows, sid, at)
    reason = _clip(close_reason, SHORT_CHARS)
    rows.leg_ends.append(
        {
            "id": leg_id,
            "session_id": _sid(sid),
            "mode": mode,
            "started_at": _utc(started_at),
            "ended_at": at,
            "close_reason": reason,
        }
    )
    previous = rows.ends.get(_sid(sid))
    if previous is None or previous[0] <= at:
        rows.ends[_sid(sid)] = (at, reason)


_BUILDERS: dict[int, Callable[..., None]] = {
    ISSUED: _issued,
    FALLBACK: _fallback,
    LEG: _leg,
    SAID: _said,
    TOOL: _tool,
    METRICS: _metrics,
    ERROR: _error,
    ENDED: _ended,
}


async def write_rows(connection: AsyncConnection, rows: Rows) -> None:
    """Write one batch (the caller's transaction): sessions first, then everything else."""
    insert = _insert_for(connection.dialect.name)
    s = table(Session)
    if rows.sessions:
        upsert = insert(s)
        new = upsert.excluded
        await connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[s.c.id],
                set_={
                    s.c.user_id: func.coalesce(s.c.user_id, new.user_id),
                    s.c.mode: func.coalesce(s.c.mode, new.mode),
                    s.c.reason: func.coalesce(s.c.reason, new.reason),
                    s.c.started_at: case(
                        (new.started_at < s.c.started_at, new.started_at), else_=s.c.started_at
                    ),
                    s.c.last_seen_at: case(
                        (new.last_seen_at > s.c.last_seen_at, new.last_seen_at),
                        else_=s.c.last_seen_at,
                    ),
                },
            ),
            list(rows.sessions.values()),
        )
    for sid, reason in rows.fallbacks.items():
        await connection.execute(
            update(s)
            .where(s.c.id == sid)
            .values(fell_back=True, fallback_reason=func.coalesce(s.c.fallback_reason, reason))
        )
    for sid, (at, reason) in rows.ends.items():
        later = s.c.ended_at.is_(None) | (s.c.ended_at <= literal(at, Session.ended_at.type))
        await connection.execute(
            update(s).where(s.c.id == sid, later).values(ended_at=at, close_reason=reason)
        )
    legs = table(Leg)
    if rows.legs:
        await connection.execute(insert(legs).on_conflict_do_nothing(), rows.legs)
    if rows.leg_ends:
        upsert = insert(legs)
        await connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[legs.c.id],
                set_={
                    legs.c.ended_at: upsert.excluded.ended_at,
                    legs.c.close_reason: upsert.excluded.close_reason,
                },
            ),
            rows.leg_ends,
        )
    for target, values in rows.inserts.items():
        await connection.execute(insert(target).on_conflict_do_nothing(), values)


def _insert_for(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _session(
    rows: Rows,
    sid: str,
    at: datetime,
    *,
    user: str | None = None,
    mode: str | None = None,
    reason: str | None = None,
) -> None:
    key = _sid(sid)
    row = rows.sessions.get(key)
    if row is None:
        rows.sessions[key] = {
            "id": key,
            "user_id": _clip(user, SHORT_CHARS) if user else None,
            "mode": mode,
            "reason": reason,
            "started_at": at,
            "last_seen_at": at,
        }
        return
    row["last_seen_at"] = max(row["last_seen_at"], at)
    row["started_at"] = min(row["started_at"], at)
    if row["user_id"] is None and user:
        row["user_id"] = _clip(user, SHORT_CHARS)
    if row["mode"] is None:
        row["mode"] = mode
    if row["reason"] is None:
        row["reason"] = reason


def new_id() -> str:
    """32 hex digits that sort in the order this process made them (time, then a counter),
    then random: rows recorded in the same microsecond still read back in order."""
    return f"{time.time_ns():016x}{next(_SEQUENCE) & 0xFFFFFFFF:08x}{secrets.token_hex(4)}"


_SEQUENCE = itertools.count()


def _insert(rows: Rows, model: type[Any], sid: str, **values: Any) -> None:
    values["id"] = new_id()
    values["session_id"] = _sid(sid)
    rows.inserts.setdefault(table(model), []).append(values)


def _arguments(arguments: Mapping[str, Any] | str, transcripts: bool) -> str | None:
    """The arguments as JSON; without transcripts only their names (values are what people
    said: an address, a subject, a message)."""
    value: Any = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return _clip(arguments, TEXT_CHARS) if transcripts else None
    if not transcripts:
        return json.dumps(dict.fromkeys(value), sort_keys=True) if isinstance(value, dict) else None
    return _clip(json.dumps(value, ensure_ascii=False, sort_keys=True), TEXT_CHARS)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _sid(session_id: str) -> str:
    return session_id.replace("\x00", "")[:SESSION_ID_LENGTH]


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, and no NUL (PostgreSQL refuses it in text, and with it the
    whole batch)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"
