"""The client-frame gate: which client events may reach OpenAI, and in what shape.

Every frame is parsed strictly (a repeated key, in any letter case, refuses it: parsers differ
on which copy wins), its fields are checked against an allowlist per event, and it is
validated with the openai SDK's GA types, unknown fields refused at every depth. What goes
upstream is JSON re-serialised from the object that was checked, never the client's bytes, so
OpenAI reads exactly what the gate read. The server owns the instructions and the tools: a
client cannot change them through `session.update` or `response.create` (the fields are
dropped and the client is told which), nor add a system, developer or assistant message
(`conversation.item.create` and `response.input` take user text only).

Audio appends, nearly every frame, have a fast path (`append_audio_chars`) that forwards the
frame as received only when it is provably the same object the full gate would send.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

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

from pipelines.contracts import VoiceError
from pipelines.contracts.validation import validation_problems

# Fields only the server sets: the prompt, the tools, and what could replace or steer them.
# Present with any value (null too), they are dropped and the client is warned.
LOCKED_SESSION_FIELDS = ("instructions", "tools", "tool_choice", "prompt", "model")
LOCKED_RESPONSE_FIELDS = ("instructions", "tools", "tool_choice", "prompt")

# What else a client may set. Anything outside these (and the locked fields) refuses the frame:
# a field the SDK learns later is not let through until someone decides it is harmless.
EVENT_FIELDS: dict[str, frozenset[str]] = {
    "input_audio_buffer.append": frozenset({"type", "event_id", "audio"}),
    "input_audio_buffer.commit": frozenset({"type", "event_id"}),
    "input_audio_buffer.clear": frozenset({"type", "event_id"}),
    "output_audio_buffer.clear": frozenset({"type", "event_id"}),
    "response.create": frozenset({"type", "event_id", "response"}),
    "response.cancel": frozenset({"type", "event_id", "response_id"}),
    "conversation.item.create": frozenset({"type", "event_id", "previous_item_id", "item"}),
    "session.update": frozenset({"type", "event_id", "session"}),
}
RESPONSE_FIELDS = frozenset(
    {"audio", "conversation", "input", "max_output_tokens", "metadata", "output_modalities"}
)
SESSION_FIELDS = frozenset(
    {"type", "audio", "include", "max_output_tokens", "output_modalities", "tracing", "truncation"}
)
ITEM_FIELDS = frozenset({"type", "role", "content", "id", "object", "status"})
TEXT_PART_FIELDS = frozenset({"type", "text"})

# ASCII only: a lone surrogate (valid in JSON text, not in UTF-8) goes up as an escape.
_CANONICAL = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


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

_Rewrite = Callable[[dict[str, Any]], Verdict]


class _Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = VoiceError(code=code, message=message, fatal=False)


def _refuse(code: str, message: str) -> NoReturn:
    raise _Refusal(code, message)


def _names(fields: Iterator[str] | list[str]) -> str:
    """Client-chosen field names, clipped, for an error message."""
    shown = sorted({name[:64] for name in fields})
    return ", ".join(repr(name) for name in shown[:5]) + (" …" if len(shown) > 5 else "")


# -- strict parsing ------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    folded = Counter(key.casefold() for key, _ in pairs)
    if len(folded) != len(pairs):
        repeated = [key for key, _ in pairs if folded[key.casefold()] > 1]
        _refuse("duplicate_key", f"the frame repeats the key {_names(repeated)}")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant).decode


def _parse(text: str) -> Any:
    try:
        return _decode(text)
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError, too many digits, NaN
        _refuse("invalid_json", "the frame is not valid JSON")


def _unknown_fields(value: Any, path: str) -> Iterator[str]:
    """Dotted paths of fields the SDK models did not define (they accept and keep them)."""
    if isinstance(value, BaseModel):
        for name in value.__pydantic_extra__ or ():
            yield f"{path}.{name}" if path else name
        for name in value.model_fields_set:
            yield from _unknown_fields(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for item in value:
            yield from _unknown_fields(item, path)


def _only(data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = [name for name in data if name not in allowed]
    if extra:
        _refuse("field_not_allowed", f"{where} may not carry {_names(extra)}")


# -- per event -------------------------------------------------------------------------------


def _as_is(data: dict[str, Any]) -> Verdict:
    return Passed(_CANONICAL(data), data["type"])


def _append(data: dict[str, Any]) -> Verdict:
    return Passed(_CANONICAL(data), data["type"], audio_chars=len(data["audio"]))


def _check_user_text(item: dict[str, Any], where: str) -> None:
    content = item.get("content") or []
    if (
        item.get("type") != "message"
        or item.get("role") != "user"
        or not content
        or any(part.get("type") != "input_text" for part in content)
    ):
        _refuse(
            "item_not_allowed",
            f"only user text messages (input_text) may be added to the conversation ({where})",
        )
    _only(item, ITEM_FIELDS, where)
    for part in content:
        _only(part, TEXT_PART_FIELDS, f"{where}.content")


def _item_create(data: dict[str, Any]) -> Verdict:
    _check_user_text(data["item"], "item")
    return _as_is(data)


def _session_update(data: dict[str, Any]) -> Verdict:
    session = data["session"]
    if session.get("type") != "realtime":
        _refuse("session_not_allowed", "only a realtime session can be updated")
    dropped = _drop(session, LOCKED_SESSION_FIELDS)
    _only(session, SESSION_FIELDS, "session")
    if len(session) <= 1:  # nothing left but `type`
        _refuse("session_update_restricted", _dropped_message(dropped, "session.update"))
    return _rewritten(data, dropped)


def _response_create(data: dict[str, Any]) -> Verdict:
    response = data.get("response")
    if response is None:
        return _as_is(data)
    dropped = _drop(response, LOCKED_RESPONSE_FIELDS)
    _only(response, RESPONSE_FIELDS, "response")
    for index, item in enumerate(response.get("input") or ()):
        _check_user_text(item, f"response.input.{index}")
    return _rewritten(data, dropped)


def _drop(fields: dict[str, Any], locked: tuple[str, ...]) -> list[str]:
    return [name for name in locked if fields.pop(name, _ABSENT) is not _ABSENT]


_ABSENT = object()


def _rewritten(data: dict[str, Any], dropped: list[str]) -> Verdict:
    event_type: str = data["type"]
    warning = None
    if dropped:
        warning = VoiceError(
            code=f"{event_type.replace('.', '_')}_restricted",
            message=_dropped_message(dropped, event_type),
            fatal=False,
        )
    return Passed(_CANONICAL(data), event_type, warning=warning)


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
    "conversation.item.create": (ConversationItemCreateEvent, _item_create),
    "session.update": (SessionUpdateEvent, _session_update),
}


# How our page and the openai SDKs start an append. Appends are nearly every frame a client
# sends, so such a frame is validated straight from its JSON by the SDK model's own validator
# (Rust-side parsing, about 1 µs for 20 ms of audio, where json.loads alone costs 2 to 4).
_APPEND_PREFIXES = ('{"type":"input_audio_buffer.append"', '{"type": "input_audio_buffer.append"')
_validate_append_json = InputAudioBufferAppendEvent.__pydantic_validator__.validate_json


def append_audio_chars(text: str) -> int:
    """The length of the base64 audio when `text` may be forwarded exactly as received: a
    valid `input_audio_buffer.append` written as our page (`JSON.stringify`) or the openai
    SDKs (`json.dumps`) write it; -1 otherwise (`check_client_frame` then says what it is, or
    what is wrong with it, and re-serialises it).

    Why forwarding such a text equals the full gate's re-serialisation: with no backslash in
    it no key is escaped; the validator kept no unknown field (none in another letter case);
    every field it kept is a string, so each is `"key":"value"` with no escape. The text is
    then exactly as long as those fields written compactly, or with one space after each
    colon and comma (at most 5 characters more), only if nothing else is in it: another copy
    of a key, the shortest being `,"type":""`, adds at least 10. So OpenAI reads the very
    object that was validated. `str.count` would say the same but costs a microsecond."""
    if text.startswith(_APPEND_PREFIXES) and "\\" not in text:
        try:
            append: InputAudioBufferAppendEvent = _validate_append_json(text)
        except ValidationError:
            return -1
        if append.__pydantic_extra__:
            return -1
        audio, event_id = append.audio, append.event_id
        compact, fields = _COMPACT_APPEND + len(audio), 2
        if event_id is not None:
            compact, fields = compact + _COMPACT_EVENT_ID + len(event_id), 3
        elif "event_id" in append.model_fields_set:
            return -1  # "event_id":null
        size = len(text)
        if size == compact or size == compact + 2 * fields - 1:
            return len(audio)
    return -1


# {"type":"input_audio_buffer.append","audio":""} and ,"event_id":"" written compactly.
_COMPACT_APPEND = len('{"type":"input_audio_buffer.append","audio":""}')
_COMPACT_EVENT_ID = len(',"event_id":""')


def check_client_frame(text: str) -> Verdict:
    """Parse, validate and re-serialise (rewriting where needed) one client text frame. Never
    raises."""
    try:
        return _check(text)
    except _Refusal as refusal:
        return Refused(refusal.error)


def _check(text: str) -> Verdict:
    data = _parse(text)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        _refuse("invalid_event", "an event must be a JSON object with a string type")
    event_type: str = data["type"]
    entry = ALLOWED.get(event_type)
    if entry is None:
        _refuse(
            "event_not_allowed",
            f"client event type {event_type[:64]!r} is not allowed on this relay",
        )
    _only(data, EVENT_FIELDS[event_type], event_type)
    model, rewrite = entry
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({where for where, _ in validation_problems(exc, whole="event")})
        _refuse(
            "invalid_event",
            f"{event_type} is not a valid GA event; check: {', '.join(fields[:5])}",
        )
    unknown = list(_unknown_fields(event, ""))
    if unknown:
        _refuse("field_not_allowed", f"{event_type} may not carry {_names(unknown)}")
    return rewrite(data)
