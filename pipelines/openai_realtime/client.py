"""The client-frame gate: which client events may reach OpenAI, and in what shape.

Every frame is parsed and validated with the openai SDK's GA types. Only the events a voice
client needs are allowed; the server owns the instructions and the tools, so a client cannot
change them through `session.update` or `response.create` (the fields are dropped and the
client is told which).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openai.types.realtime import (
    ConversationItemCreateEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    OutputAudioBufferClearEvent,
    ResponseCancelEvent,
    ResponseCreateEvent,
    SessionUpdateEvent,
)
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from pipelines.contracts import VoiceError
from pipelines.contracts.validation import validation_problems

# Fields only the server sets: the prompt, the tools, and what could replace or steer them.
LOCKED_SESSION_FIELDS = ("instructions", "tools", "tool_choice", "prompt", "model")
LOCKED_RESPONSE_FIELDS = ("instructions", "tools", "tool_choice", "prompt")

_JSON_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Passed:
    """Forward `text` upstream. `event_type` and `audio_chars` feed the translator."""

    text: str
    event_type: str
    audio_chars: int = 0
    warning: VoiceError | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    error: VoiceError


Verdict = Passed | Refused

_Rewrite = Callable[[dict[str, Any], str], Verdict]


def _as_is(data: dict[str, Any], text: str) -> Verdict:
    return Passed(text, data["type"])


def _append(data: dict[str, Any], text: str) -> Verdict:
    return Passed(text, "input_audio_buffer.append", audio_chars=len(data["audio"]))


def _text_item(data: dict[str, Any], text: str) -> Verdict:
    item = data["item"]
    content = item.get("content") or []
    if (
        item.get("type") != "message"
        or item.get("role") != "user"
        or not content
        or any(part.get("type") != "input_text" for part in content)
    ):
        return _refuse(
            "item_not_allowed",
            "only user text messages (input_text) may be added to the conversation",
        )
    return Passed(text, "conversation.item.create")


def _session_update(data: dict[str, Any], text: str) -> Verdict:
    session = data["session"]
    if session.get("type") != "realtime":
        return _refuse("session_not_allowed", "only a realtime session can be updated")
    dropped = [name for name in LOCKED_SESSION_FIELDS if session.pop(name, None) is not None]
    if len(session) <= 1:  # nothing left but `type`
        return _refuse("session_update_restricted", _dropped_message(dropped, "session.update"))
    return _rewritten(data, "session.update", dropped)


def _response_create(data: dict[str, Any], text: str) -> Verdict:
    response = data.get("response")
    if not isinstance(response, dict):
        return Passed(text, "response.create")
    dropped = [name for name in LOCKED_RESPONSE_FIELDS if response.pop(name, None) is not None]
    if not dropped:
        return Passed(text, "response.create")
    return _rewritten(data, "response.create", dropped)


def _rewritten(data: dict[str, Any], event_type: str, dropped: list[str]) -> Verdict:
    warning = None
    if dropped:
        warning = VoiceError(
            code=f"{event_type.replace('.', '_')}_restricted",
            message=_dropped_message(dropped, event_type),
            fatal=False,
        )
    return Passed(_JSON_DUMPS(data), event_type, warning=warning)


def _dropped_message(dropped: list[str], event_type: str) -> str:
    if not dropped:
        return f"{event_type} changed nothing the client may change"
    return (
        f"{', '.join(dropped)} are set by the server; dropped them from {event_type} "
        "and forwarded the rest"
    )


# event type -> (SDK GA model that validates it, how it is forwarded)
ALLOWED: dict[str, tuple[type[BaseModel], _Rewrite]] = {
    "input_audio_buffer.append": (InputAudioBufferAppendEvent, _append),
    "input_audio_buffer.commit": (InputAudioBufferCommitEvent, _as_is),
    "input_audio_buffer.clear": (InputAudioBufferClearEvent, _as_is),
    "output_audio_buffer.clear": (OutputAudioBufferClearEvent, _as_is),
    "response.create": (ResponseCreateEvent, _response_create),
    "response.cancel": (ResponseCancelEvent, _as_is),
    "conversation.item.create": (ConversationItemCreateEvent, _text_item),
    "session.update": (SessionUpdateEvent, _session_update),
}


# How our page and the openai SDKs start an append. Appends are nearly every frame a client
# sends, so such a frame is validated straight from its JSON by the SDK model's own validator
# (Rust-side parsing, about 1 µs for 20 ms of audio, where json.loads alone costs 2 to 4).
_APPEND_PREFIXES = ('{"type":"input_audio_buffer.append"', '{"type": "input_audio_buffer.append"')
_validate_append_json = InputAudioBufferAppendEvent.__pydantic_validator__.validate_json


def append_audio_chars(text: str) -> int:
    """The length of the base64 audio when `text` is a valid `input_audio_buffer.append` in
    the shape our page and the openai SDKs send; -1 otherwise (`check_client_frame` then
    says what it is, or what is wrong with it)."""
    if text.startswith(_APPEND_PREFIXES):
        try:
            append: InputAudioBufferAppendEvent = _validate_append_json(text)
            return len(append.audio)
        except ValidationError:
            pass
    return -1


def check_client_frame(text: str) -> Verdict:
    """Parse, validate and (where needed) rewrite one client text frame. Never raises."""
    try:
        data = from_json(text)
    except ValueError:
        return _refuse("invalid_json", "the frame is not valid JSON")
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return _refuse("invalid_event", "an event must be a JSON object with a string type")
    event_type: str = data["type"]
    entry = ALLOWED.get(event_type)
    if entry is None:
        return _refuse(
            "event_not_allowed",
            f"client event type {event_type[:64]!r} is not allowed on this relay",
        )
    model, rewrite = entry
    try:
        model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({where for where, _ in validation_problems(exc, whole="event")})
        return _refuse(
            "invalid_event",
            f"{event_type} is not a valid GA event; check: {', '.join(fields[:5])}",
        )
    return rewrite(data, text)


def _refuse(code: str, message: str) -> Refused:
    return Refused(VoiceError(code=code, message=message, fatal=False))
