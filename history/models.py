"""What the history answers, as the admin API returns it and `voicegw history` prints it (one set
of models for both, and for the OpenAPI document)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from pipelines.contracts import Mode


class ToolOutcomes(BaseModel):
    ok: int = 0
    error: int = 0


class SessionSummary(BaseModel):
    """One session in a list: who, which mode by which rule, how long, how it went."""

    id: str
    user: str | None
    mode: Mode | None = Field(description="the mode the session was first issued")
    reason: str | None = Field(description="the routing rule that chose it")
    modes: list[Mode] = Field(description="the modes its halves ran in, in order")
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    close_reason: str | None
    fell_back: bool
    fallback_reason: str | None
    turns: int
    tool_calls: ToolOutcomes
    errors: int
    voice_to_voice_p50_ms: float | None


class SessionPage(BaseModel):
    sessions: list[SessionSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class RoutingEventView(BaseModel):
    at: datetime
    kind: str = Field(
        description="issued (mode, reason: the rule) or fallback (reason: the page's words)"
    )
    mode: Mode | None
    reason: str | None


class UtteranceView(BaseModel):
    at: datetime
    role: str = Field(description="user or agent")
    text: str | None = Field(description="null when transcripts are not kept")
    chars: int


class ToolCallView(BaseModel):
    at: datetime = Field(description="when the call started")
    call_id: str
    name: str
    arguments: Any = Field(description="JSON; without transcripts only the argument names")
    status: str
    duration_ms: float
    idempotency_key: str
    output: str | None = Field(description="n8n's answer (clipped); null without transcripts")


class ErrorView(BaseModel):
    at: datetime
    code: str
    message: str
    fatal: bool


class TurnView(BaseModel):
    """One turn of one half: the user's words, the agent's, its tools, latency, errors."""

    turn: int = Field(description="1, 2, … within the half; 0: before the user first spoke")
    said: list[UtteranceView]
    tool_calls: list[ToolCallView]
    eou_ms: float | None = None
    stt_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    voice_to_voice_ms: float | None = None
    errors: list[ErrorView]


class LegView(BaseModel):
    """One half of the session: a relay connection (openai) or an agent job (livekit)."""

    id: str
    mode: Mode | None = Field(description="null when the record of its start was lost")
    started_at: datetime | None
    ended_at: datetime | None
    close_reason: str | None
    turns: list[TurnView]
    errors: list[ErrorView] = Field(description="errors outside any turn (how it ended)")


class SessionDetail(SessionSummary):
    routing: list[RoutingEventView]
    legs: list[LegView]


class ModeFigures(BaseModel):
    """One mode's figures over a window: what ops check before raising the rollout."""

    mode: Mode
    sessions: int = Field(description="sessions first issued this mode")
    fell_back: int
    fallback_rate: float | None = Field(description="fell_back / sessions")
    tool_calls: int = Field(description="tool calls made in this mode's halves")
    tool_errors: int
    tool_error_rate: float | None
    turns: int = Field(description="turns with a voice-to-voice figure, in this mode's halves")
    voice_to_voice_p50_ms: float | None
    voice_to_voice_p95_ms: float | None


class Comparison(BaseModel):
    since: datetime | None
    until: datetime | None
    modes: list[ModeFigures]


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions: started in [since, until), first issued `mode` by rule `reason`, of
    `user` (case-insensitive), that fell back or not, that had a tool error or not."""

    since: datetime | None = None
    until: datetime | None = None
    mode: Mode | None = None
    reason: str | None = None
    user: str | None = None
    fell_back: bool | None = None
    tool_error: bool | None = None


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `30m`, `2w` ago, or an ISO 8601 date or time (UTC unless it says); raises
    ValueError saying what is accepted."""
    value = text.strip()
    match = _RELATIVE.match(value.lower())
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use an ISO 8601 date or time, or an age like 7d, 24h, 30m"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
