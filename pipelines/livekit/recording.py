"""The session history of one agent job: its turns as the tracker completes them, its tool
calls with their arguments, its `voice.error`s and how the session closed, told to the
contract's `SessionHistory` (turns numbered from 1, as the relay numbers them)."""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentSession
from livekit.agents.voice.events import CloseEvent

from pipelines.contracts import ToolResult, VoiceError
from pipelines.contracts.history import SessionHistory

from .latency import TurnRecord, TurnTracker


class SessionRecording:
    """A tool listener and the sink of turns and errors, for one session's history."""

    def __init__(self, history: SessionHistory, tracker: TurnTracker) -> None:
        self._history = history
        self._tracker = tracker
        self._arguments: dict[str, tuple[int, dict[str, Any]]] = {}
        self.close_reason: str | None = None

    def attach(self, session: AgentSession[Any]) -> None:
        session.on("close", self._on_close)

    def detach(self, session: AgentSession[Any]) -> None:
        session.off("close", self._on_close)

    def turn(self, record: TurnRecord) -> None:
        number = record.index + 1
        if record.user_text:
            self._history.user_said(number, record.user_text)
        for text in record.assistant_text:
            self._history.agent_said(number, text)
        self._history.turn_metrics(number, record.metrics())

    def error(self, error: VoiceError) -> None:
        self._history.error(error, self._current_turn())

    def ended(self) -> None:
        self._history.ended(self.close_reason or "job_shutdown")

    # tool listener
    def tool_started(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self._arguments[call_id] = (self._current_turn(), dict(arguments))

    def tool_finished(self, result: ToolResult) -> None:
        turn, arguments = self._arguments.pop(result.call_id, (self._current_turn(), {}))
        self._history.tool_called(turn, result, arguments)

    def _current_turn(self) -> int:
        """The open turn, else the last one (0 before the first)."""
        open_turn = self._tracker.open_turn
        return open_turn.index + 1 if open_turn is not None else len(self._tracker.turns)

    def _on_close(self, ev: CloseEvent) -> None:
        if self.close_reason is None:
            reason = ev.reason
            self.close_reason = str(reason.value) if hasattr(reason, "value") else str(reason)
