"""What the gateway, the relay and the LiveKit worker tell the session history.

Both modes record into one history through these two small interfaces, so neither pipeline
knows where it is kept (the database lives in the `history` package, which only the composition
root and the gateway's admin API import):

- `HistoryRecorder`, one per process: the gateway records each session it issues and each
  fallback the page reports, and opens a `SessionHistory` for every half of a session it runs.
- `SessionHistory`, one per half of a session (a relay connection, or an agent job): what the
  user said, what the agent said, each tool call, each turn's `metrics.turn`, errors, and how
  it ended. Turns are numbered from 1 within the half; 0 is anything before the user first
  spoke.

Every method is synchronous, cheap and never raises: an implementation appends to a bounded
queue and writes in the background, so recording never delays a frame, a token or a turn. The
pipelines call them per event (a transcript, a tool call, a turn), never per audio frame.
`NO_HISTORY` records nothing; it is the default everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .executor import ToolResult, idempotency_key
from .messages import MetricsTurn, VoiceError
from .session_config import Mode, Reason

__all__ = [
    "NO_HISTORY",
    "NO_SESSION_HISTORY",
    "HistoryRecorder",
    "SessionHistory",
    "idempotency_key",
]


class SessionHistory(Protocol):
    """One half of one session: a relay connection (openai) or an agent job (livekit)."""

    def user_said(self, turn: int, text: str) -> None:
        """The user's final transcript of `turn`."""

    def agent_said(self, turn: int, text: str) -> None:
        """One reply of the agent in `turn` (a turn may have several: a filler, the answer)."""

    def tool_called(
        self, turn: int, result: ToolResult, arguments: Mapping[str, Any] | str
    ) -> None:
        """A tool call of `turn` that has finished (or was refused before it ran)."""

    def turn_metrics(self, turn: int, metrics: MetricsTurn) -> None:
        """The `metrics.turn` the page got for `turn`."""

    def error(self, error: VoiceError, turn: int | None = None) -> None:
        """A `voice.error` the page got (`turn`: the one it happened in, when known)."""

    def ended(self, close_reason: str) -> None:
        """This half of the session is over; nothing is recorded after it."""


class HistoryRecorder(Protocol):
    """The process's recorder."""

    def session_issued(
        self, *, session_id: str, user: str | None, mode: Mode, reason: Reason
    ) -> None:
        """The gateway issued a session config (each time a page asks, reloads included)."""

    def fallback_reported(self, *, session_id: str, reason: str) -> None:
        """The page reported its livekit session failed (`reason` is the page's own words)."""

    def open(self, *, session_id: str, mode: Mode, user: str | None = None) -> SessionHistory:
        """Start recording one half of `session_id`, running in `mode`."""

    async def flush(self) -> None:
        """Wait until what was recorded so far is written, or given up on (bounded in time).
        Cancelling it is safe."""


class _NoSessionHistory:
    def user_said(self, turn: int, text: str) -> None:
        pass

    def agent_said(self, turn: int, text: str) -> None:
        pass

    def tool_called(
        self, turn: int, result: ToolResult, arguments: Mapping[str, Any] | str
    ) -> None:
        pass

    def turn_metrics(self, turn: int, metrics: MetricsTurn) -> None:
        pass

    def error(self, error: VoiceError, turn: int | None = None) -> None:
        pass

    def ended(self, close_reason: str) -> None:
        pass


class _NoHistory:
    def session_issued(
        self, *, session_id: str, user: str | None, mode: Mode, reason: Reason
    ) -> None:
        pass

    def fallback_reported(self, *, session_id: str, reason: str) -> None:
        pass

    def open(self, *, session_id: str, mode: Mode, user: str | None = None) -> SessionHistory:
        return NO_SESSION_HISTORY

    async def flush(self) -> None:
        pass


NO_SESSION_HISTORY: SessionHistory = _NoSessionHistory()
NO_HISTORY: HistoryRecorder = _NoHistory()
