"""The relay's protocol core: frames in, actions out, no I/O.

`RelayProtocol` sees every client frame and every upstream event of one session. It decides
what reaches OpenAI (through the client gate), which state messages the page gets beside the
forwarded events, and when a tool runs and how its result goes back. Time is passed in, so
tests drive it with plain strings and numbers.

Upstream events are routed by type through one table; an event whose handler needs no fields
(an audio delta) is never parsed beyond its `type`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStoppedEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseDoneEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseTextDoneEvent,
)
from pydantic import BaseModel, ValidationError

from pipelines.contracts import (
    AgentState,
    MetricsTurn,
    ToolArgumentError,
    ToolFinished,
    ToolResult,
    ToolSpec,
    ToolStarted,
    TranscriptAssistant,
    TranscriptUser,
    VoiceError,
    fatal_error,
)
from pipelines.contracts.history import NO_SESSION_HISTORY, SessionHistory
from pipelines.contracts.messages import AgentStateName
from pipelines.contracts.metrics import to_ms

from .actions import FORWARD, Action, Close, StartTool, ToClient, ToUpstream
from .client import Passed, append_audio_chars, check_client_frame
from .options import BYTES_PER_MS, RealtimeOptions, session_update

_NOTHING: tuple[Action, ...] = ()
_REMEMBERED_ITEMS = 32  # user items whose late transcript can still find its turn
_TYPE_PREFIX = '{"type":"'
_AUDIO_DELTA = b'{"type":"response.output_audio.delta"'


@dataclass(frozen=True)
class RelayLimits:
    """Bounds on what one client may send."""

    max_frame_bytes: int = 2 * 1024 * 1024
    max_messages_per_second: int = 200


class RateLimiter:
    """Token bucket: `rate` messages per second, bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._last = -math.inf  # the bucket starts full

    def allow(self, now: float) -> bool:
        tokens = self._tokens + (now - self._last) * self._rate
        self._last = now
        if tokens > self._rate:
            tokens = self._rate
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True


@dataclass
class _TurnTimes:
    """Timestamps of one user turn, as the relay sees them (monotonic seconds)."""

    stopped_at: float | None = None
    eou_ms: float | None = None
    transcribed_at: float | None = None
    first_audio_at: float | None = None
    llm_ttft_ms: float | None = None
    reported: bool = False


def event_type_of(text: str) -> str | None:
    """The `type` of an upstream event without parsing it, when it comes first (as OpenAI
    sends it); None means "parse to find out"."""
    if text.startswith(_TYPE_PREFIX):
        end = text.find('"', 9)
        if end > 9:
            return text[9:end]
    return None


_Handler = Callable[["RelayProtocol", Any, float], Sequence[Action]]


class RelayProtocol:
    """One relay session's protocol state. Not thread-safe; one per session."""

    def __init__(
        self,
        options: RealtimeOptions,
        *,
        limits: RelayLimits | None = None,
        tools: Mapping[str, ToolSpec] | None = None,
        history: SessionHistory = NO_SESSION_HISTORY,
    ) -> None:
        """`options` is what the server imposes upstream; `tools` defaults to the catalogue
        given in `options`; `history` hears each turn's words, tool calls and latency (a turn
        starts when the user's audio is committed; a transcript that arrives late finds its
        turn by the item it transcribes)."""
        self.options = options
        self.limits = limits or RelayLimits()
        self._tools = tools if tools is not None else {t.name: t for t in options.tools}
        self._rate = RateLimiter(self.limits.max_messages_per_second)
        self._vad = options.turn_detection.kind != "none"
        self._state: AgentStateName = "initializing"
        self._user_speaking = False
        self._response_active = False
        self._response_created_at: float | None = None
        self._response_first_output_at: float | None = None
        self._response_has_audio = False
        self._audio_in_chars = 0
        self._turn = _TurnTimes()
        self._started_calls: set[str] = set()
        self._pending: dict[str, str] = {}  # call_id -> tool name
        self._needs_response = False
        self.malformed_upstream = 0
        self._history = history
        self._turn_number = 0  # turns are numbered from 1; 0 is before the user first spoke
        self._item_turns: dict[str, int] = {}  # user item id -> its turn
        self._calls: dict[str, tuple[int, dict[str, Any]]] = {}  # call_id -> turn, arguments

    # -- session start -----------------------------------------------------------------------

    def start(self) -> list[Action]:
        """The first frames: the page hears `initializing`, OpenAI gets the session config."""
        return [
            ToClient(AgentState(state="initializing").to_json()),
            ToUpstream(session_update(self.options)),
        ]

    # -- client -> upstream ------------------------------------------------------------------

    def client_frame(self, text: str, now: float) -> Sequence[Action]:
        """One text frame from the client. A frame that goes to OpenAI as it is (nearly every
        frame: audio appends) gets the shared `FORWARD`."""
        if len(text) > self.limits.max_frame_bytes or (
            len(text) * 4 > self.limits.max_frame_bytes
            and len(text.encode()) > self.limits.max_frame_bytes
        ):
            return self.frame_too_large()
        if not self._rate.allow(now):
            return self._rate_limited()
        audio_chars = append_audio_chars(text)
        if audio_chars >= 0:  # the hot path: an append, forwarded as is
            self._audio_in_chars += audio_chars
            return FORWARD
        verdict = check_client_frame(text)
        if not isinstance(verdict, Passed):
            return (ToClient(verdict.error.to_json()),)
        if verdict.audio_chars:
            self._audio_in_chars += verdict.audio_chars
        elif verdict.event_type == "input_audio_buffer.commit":
            self._turn = _TurnTimes(stopped_at=now)
        elif verdict.event_type == "input_audio_buffer.clear":
            self._audio_in_chars = 0
        if verdict.warning is not None:
            return (ToUpstream(verdict.text), ToClient(verdict.warning.to_json()))
        return FORWARD if verdict.text == text else (ToUpstream(verdict.text),)

    def binary_frame(self, size: int, now: float) -> Sequence[Action]:
        """A binary frame of `size` bytes: events are JSON text, so it is refused (or, when
        oversize, closes the session like an oversize text frame). It counts against the
        message rate like any frame: each one is answered."""
        if size > self.limits.max_frame_bytes:
            return self.frame_too_large()
        if not self._rate.allow(now):
            return self._rate_limited()
        return (ToClient(_error("binary_not_allowed", "events are JSON text frames").to_json()),)

    def control_frame(self, now: float) -> Sequence[Action]:
        """A ping or pong from the client (the I/O layer answers pings): nothing to do but
        count it against the message rate."""
        return _NOTHING if self._rate.allow(now) else self._rate_limited()

    def frame_too_large(self) -> Sequence[Action]:
        """What a frame over `max_frame_bytes` gets (the I/O layer may see one before it is
        read whole)."""
        limit = self.limits.max_frame_bytes
        return (
            Close(
                1009,
                "frame too large",
                fatal_error("frame_too_large", f"a frame may be at most {limit} bytes"),
            ),
        )

    def _rate_limited(self) -> Sequence[Action]:
        rate = self.limits.max_messages_per_second
        return (
            Close(
                1008,
                "rate limit",
                fatal_error("rate_limited", f"more than {rate} messages per second"),
            ),
        )

    # -- upstream -> client ------------------------------------------------------------------

    def is_passthrough(self, payload: bytes) -> bool:
        """True for an upstream event that needs nothing but forwarding, so the I/O layer may
        skip `upstream_event` for it: the hot path, audio deltas after a response's first."""
        return self._response_has_audio and payload.startswith(_AUDIO_DELTA)

    def upstream_event(self, text: str, now: float) -> Sequence[Action]:
        """One upstream event (already forwarded as is). Returns what to send beside it."""
        event_type = event_type_of(text)
        if event_type is None:
            try:
                data = json.loads(text)
                event_type = str(data.get("type"))
            except (ValueError, AttributeError, RecursionError):
                self.malformed_upstream += 1
                return _NOTHING
        entry = _HANDLERS.get(event_type)
        if entry is None:
            return _NOTHING
        model, handler = entry
        event: Any = None
        if model is not None:
            try:
                event = model.model_validate_json(text)
            except ValidationError:
                self.malformed_upstream += 1
                return _NOTHING
        return handler(self, event, now)

    def _set_state(self, state: AgentStateName, out: list[Action]) -> None:
        if state != self._state:
            self._state = state
            out.append(ToClient(AgentState(state=state).to_json()))

    def _resting_state(self) -> AgentStateName:
        if self._pending:
            return "thinking"
        return "listening" if self._vad else "idle"

    def _on_session_updated(self, _: None, now: float) -> Sequence[Action]:
        out: list[Action] = []
        if self._state == "initializing":
            self._set_state(self._resting_state(), out)
        return out

    def _on_speech_started(self, _: None, now: float) -> Sequence[Action]:
        self._user_speaking = True
        self._turn = _TurnTimes()
        out: list[Action] = []
        self._set_state("listening", out)
        return out

    def _on_speech_stopped(self, event: InputAudioBufferSpeechStoppedEvent, now: float) -> Any:
        self._user_speaking = False
        heard_ms = self._audio_in_chars * 3 / 4 / BYTES_PER_MS
        lag = heard_ms - event.audio_end_ms
        self._turn = _TurnTimes(stopped_at=now, eou_ms=round(lag, 1) if lag >= 0 else None)
        out: list[Action] = []
        self._set_state("thinking", out)
        return out

    def _on_committed(self, event: InputAudioBufferCommittedEvent, now: float) -> Sequence[Action]:
        self._turn_number += 1
        self._item_turns[event.item_id] = self._turn_number
        if len(self._item_turns) > _REMEMBERED_ITEMS:
            del self._item_turns[next(iter(self._item_turns))]
        if self._turn.stopped_at is None:
            self._turn.stopped_at = now
        out: list[Action] = []
        self._set_state("thinking", out)
        return out

    def _on_user_transcript(
        self, event: ConversationItemInputAudioTranscriptionCompletedEvent, now: float
    ) -> Sequence[Action]:
        if self._turn.transcribed_at is None:
            self._turn.transcribed_at = now
        turn = self._item_turns.get(event.item_id, self._turn_number)
        self._history.user_said(turn, event.transcript)
        return (ToClient(TranscriptUser(text=event.transcript, final=True).to_json()),)

    def _on_response_created(self, _: None, now: float) -> Sequence[Action]:
        self._response_active = True
        self._response_created_at = now
        self._response_first_output_at = None
        self._response_has_audio = False
        self._needs_response = False  # a new response sees every output sent so far
        out: list[Action] = []
        self._set_state("thinking", out)
        return out

    def _on_output_delta(self, _: None, now: float) -> Sequence[Action]:
        if self._response_first_output_at is None:
            self._response_first_output_at = now
        return _NOTHING

    def _on_audio_delta(self, _: None, now: float) -> Sequence[Action]:
        if self._response_has_audio:
            return _NOTHING
        self._response_has_audio = True
        if self._response_first_output_at is None:
            self._response_first_output_at = now
        turn = self._turn
        if turn.first_audio_at is None:
            turn.first_audio_at = now
            if self._response_created_at is not None:
                turn.llm_ttft_ms = to_ms(self._response_first_output_at - self._response_created_at)
        out: list[Action] = []
        self._set_state("speaking", out)
        return out

    def _on_assistant_transcript(
        self, event: ResponseAudioTranscriptDoneEvent | ResponseTextDoneEvent, now: float
    ) -> Sequence[Action]:
        if isinstance(event, ResponseAudioTranscriptDoneEvent):
            text = event.transcript
        else:
            text = event.text
        self._history.agent_said(self._turn_number, text)
        return (ToClient(TranscriptAssistant(text=text, final=True).to_json()),)

    def _on_arguments_done(
        self, event: ResponseFunctionCallArgumentsDoneEvent, now: float
    ) -> Sequence[Action]:
        call_id, name = event.call_id, event.name
        if call_id in self._started_calls:
            return _NOTHING
        self._started_calls.add(call_id)
        out: list[Action] = [ToClient(ToolStarted(call_id=call_id, name=name).to_json())]
        tool = self._tools.get(name)
        if tool is None:
            why = f"The {name} tool does not exist. Tell the user you cannot do that."
            out += self._refuse_call(call_id, name, why, event.arguments)
            return out
        try:
            arguments = tool.validate_arguments(event.arguments)
        except ToolArgumentError as exc:
            why = f"{exc}. Ask the user for what is missing and try again."
            out += self._refuse_call(call_id, name, why, event.arguments)
            return out
        self._pending[call_id] = name
        self._calls[call_id] = (self._turn_number, arguments)
        out.append(StartTool(call_id=call_id, name=name, arguments=arguments))
        return out

    def _refuse_call(self, call_id: str, name: str, why: str, arguments: str) -> list[Action]:
        """A call that never runs (no such tool, bad arguments): the model hears why."""
        refused = ToolResult(call_id=call_id, name=name, status="error", output=why, duration_ms=0)
        self._history.tool_called(self._turn_number, refused, arguments)
        return self._finish_call(call_id, name, "error", why, 0.0)

    def _on_response_done(self, event: ResponseDoneEvent, now: float) -> Sequence[Action]:
        self._response_active = False
        out: list[Action] = []
        # A call the user interrupted before its arguments were complete never ran; it still
        # gets an output item, so no call is left dangling in the conversation.
        for item in event.response.output or ():
            if (
                item.type == "function_call"
                and item.call_id
                and (item.call_id not in self._started_calls)
            ):
                self._started_calls.add(item.call_id)
                out.append(
                    ToUpstream(
                        _function_output(
                            item.call_id,
                            f"The user interrupted before {item.name} ran; it did not run.",
                        )
                    )
                )
        turn = self._turn
        if turn.first_audio_at is not None and not turn.reported:
            turn.reported = True
            metrics = self._metrics(turn)
            self._history.turn_metrics(self._turn_number, metrics)
            out.append(ToClient(metrics.to_json(), turn=metrics))
        self._set_state(self._resting_state(), out)
        out += self._maybe_respond()
        return out

    def _metrics(self, turn: _TurnTimes) -> MetricsTurn:
        stt_ms = v2v_ms = None
        if turn.stopped_at is not None:
            if turn.transcribed_at is not None:
                stt_ms = to_ms(turn.transcribed_at - turn.stopped_at)
            if turn.first_audio_at is not None:
                v2v_ms = to_ms(turn.first_audio_at - turn.stopped_at) + (turn.eou_ms or 0.0)
        return MetricsTurn(
            eou_ms=turn.eou_ms,
            stt_ms=stt_ms,
            llm_ttft_ms=turn.llm_ttft_ms,
            tts_ttfb_ms=None,  # one model speaks: there is no separate TTS stage to see
            voice_to_voice_ms=round(v2v_ms, 1) if v2v_ms is not None else None,
        )

    # -- tools -------------------------------------------------------------------------------

    def tool_finished(self, result: ToolResult, now: float) -> Sequence[Action]:
        """A `StartTool` came back (the executor never raises, so this always happens)."""
        if self._pending.pop(result.call_id, None) is None:
            return _NOTHING
        turn, arguments = self._calls.pop(result.call_id)
        self._history.tool_called(turn, result, arguments)
        out = self._finish_call(
            result.call_id, result.name, result.status, result.output, result.duration_ms
        )
        if not self._pending and not self._response_active:
            self._set_state(self._resting_state() if not self._needs_response else "thinking", out)
        out += self._maybe_respond()
        return out

    def _finish_call(
        self, call_id: str, name: str, status: Any, output: str, duration_ms: float
    ) -> list[Action]:
        self._needs_response = True
        finished = ToolFinished(call_id=call_id, name=name, status=status, duration_ms=duration_ms)
        return [ToClient(finished.to_json()), ToUpstream(_function_output(call_id, output))]

    def _maybe_respond(self) -> list[Action]:
        """Ask for the follow-up answer once every call of the turn has its output, unless the
        user has the floor or a response is already running (it will see the outputs)."""
        if (
            not self._needs_response
            or self._pending
            or self._response_active
            or self._user_speaking
        ):
            return []
        self._needs_response = False
        return [ToUpstream('{"type":"response.create"}')]

    @property
    def pending_tools(self) -> int:
        return len(self._pending)

    @property
    def state(self) -> AgentStateName:
        return self._state


def _function_output(call_id: str, output: str) -> str:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return json.dumps({"type": "conversation.item.create", "item": item}, separators=(",", ":"))


def _error(code: str, message: str) -> VoiceError:
    return VoiceError(code=code, message=message, fatal=False)


# upstream event type -> (SDK model to parse it with, or None: the type is enough; handler)
_HANDLERS: dict[str, tuple[type[BaseModel] | None, _Handler]] = {
    "session.updated": (None, RelayProtocol._on_session_updated),
    "input_audio_buffer.speech_started": (None, RelayProtocol._on_speech_started),
    "input_audio_buffer.speech_stopped": (
        InputAudioBufferSpeechStoppedEvent,
        RelayProtocol._on_speech_stopped,
    ),
    "input_audio_buffer.committed": (
        InputAudioBufferCommittedEvent,
        RelayProtocol._on_committed,
    ),
    "conversation.item.input_audio_transcription.completed": (
        ConversationItemInputAudioTranscriptionCompletedEvent,
        RelayProtocol._on_user_transcript,
    ),
    "response.created": (None, RelayProtocol._on_response_created),
    "response.output_audio.delta": (None, RelayProtocol._on_audio_delta),
    "response.output_audio_transcript.delta": (None, RelayProtocol._on_output_delta),
    "response.output_text.delta": (None, RelayProtocol._on_output_delta),
    "response.function_call_arguments.delta": (None, RelayProtocol._on_output_delta),
    "response.output_audio_transcript.done": (
        ResponseAudioTranscriptDoneEvent,
        RelayProtocol._on_assistant_transcript,
    ),
    "response.output_text.done": (ResponseTextDoneEvent, RelayProtocol._on_assistant_transcript),
    "response.function_call_arguments.done": (
        ResponseFunctionCallArgumentsDoneEvent,
        RelayProtocol._on_arguments_done,
    ),
    "response.done": (ResponseDoneEvent, RelayProtocol._on_response_done),
}
