"""The tables of the session history (SQLAlchemy 2). The migrations in `migrations/` create
exactly these (a test compares them).

A session's row is made by whichever record reaches the database first (the gateway's issue,
or a relay or agent half); the other tables only get rows inserted (a half's row is written
again, whole, when it ends), each naming its session and no foreign key: two processes (a
gateway replica and an agent worker) write one session's halves without a lock, a batch written
twice inserts nothing new (ids are made before the first attempt), and a record lost to a full
queue leaves nothing dangling. Deleting a session
deletes by session id in every table (`history/retention.py`).

Times are UTC, stored without a zone (the same on SQLite and PostgreSQL) and read back aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SESSION_ID_LENGTH = 64
ID_LENGTH = 32  # uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out; naive UTC in the database."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("history times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Session(Base):
    """One session the gateway issued: who, which mode by which rule, when, how it ended."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(SESSION_ID_LENGTH), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[str | None] = mapped_column(String(16), index=True)  # first issued
    reason: Mapped[str | None] = mapped_column(String(32))  # the rule behind that mode
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # retention
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_reason: Mapped[str | None] = mapped_column(Text)  # of the half that ended last
    fell_back: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    fallback_reason: Mapped[str | None] = mapped_column(Text)  # the page's first report


class RoutingEvent(Base):
    """Each session config issued (`issued`: mode and rule) and each fallback the page
    reported (`fallback`: the page's reason)."""

    __tablename__ = "routing_events"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(SESSION_ID_LENGTH), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)


class Leg(Base):
    """One half of a session: a relay connection (openai) or an agent job (livekit). Written
    when it starts and again, whole, when it ends (an upsert: the end alone is enough)."""

    __tablename__ = "legs"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(SESSION_ID_LENGTH), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_reason: Mapped[str | None] = mapped_column(Text)


class Utterance(Base):
    """What the user or the agent said in a turn. `text` is null when transcripts are not
    kept (HISTORY_TRANSCRIPTS=false); `chars` is its length either way."""

    __tablename__ = "utterances"
    __table_args__ = (Index(None, "leg_id", "turn"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(SESSION_ID_LENGTH), index=True)
    leg_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    turn: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    role: Mapped[str] = mapped_column(String(8))  # user | agent
    text: Mapped[str | None] = mapped_column(Text)
    chars: Mapped[int] = mapped_column(Integer)


class TurnMetrics(Base):
    """A turn's `metrics.turn`: stage latencies in ms (null: the mode cannot observe it)."""

    __tablename__ = "turn_metrics"
    __table_args__ = (Index(None, "leg_id", "turn"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(SESSION_ID_LENGTH), index=True)
    leg_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    turn: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    eou_ms: Mapped[float | None] = mapped_column(Float)
    stt_ms: Mapped[float | None] = mapped_column(Float)
    llm_ttft_ms: Mapped[float | None] = mapped_column(Float)
    tts_ttfb_ms: Mapped[float | None] = mapped_column(Float)
    voice_to_voice_ms: Mapped[float | None] = mapped_column(Float)


class ToolCall(Base):
    """One tool call: what was asked (`arguments`, JSON), how it went, the key n8n saw, and
    n8n's answer clipped (`output`). Without transcripts, `arguments` keeps only the argument
    names (values null) and `output` is null."""

    __tablename__ = "tool_calls"
    __table_args__ = (Index(None, "leg_id", "turn"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(SESSION_ID_LENGTH), index=True)
    leg_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    turn: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # when it started
    call_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    arguments: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), index=True)  # ok | error
    duration_ms: Mapped[float] = mapped_column(Float)
    idempotency_key: Mapped[str] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)


class Error(Base):
    """A `voice.error` the page got, or how a half failed."""

    __tablename__ = "errors"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(SESSION_ID_LENGTH), index=True)
    leg_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    turn: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    code: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    fatal: Mapped[bool] = mapped_column(Boolean)


def table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# Every table whose rows belong to a session, children first (what retention deletes).
SESSION_TABLES: tuple[Table, ...] = tuple(
    table(model) for model in (RoutingEvent, Leg, Utterance, TurnMetrics, ToolCall, Error, Session)
)
