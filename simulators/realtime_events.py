"""OpenAI Realtime GA event shapes for the simulator: builders for server events, and the SDK
models that validate each client and server event by its `type`.

Builders put `type` first, as OpenAI does (the relay's fast path relies on it but does not
require it).
"""

from __future__ import annotations

import itertools
import typing
from typing import Any

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel


def _models_by_type(union: Any) -> dict[str, type[BaseModel]]:
    members = typing.get_args(typing.get_args(union)[0])
    table: dict[str, type[BaseModel]] = {}
    for model in members:
        literal = model.model_fields["type"].annotation
        for name in typing.get_args(literal):
            table[name] = model
    return table


CLIENT_EVENT_MODELS = _models_by_type(RealtimeClientEvent)
SERVER_EVENT_MODELS = _models_by_type(RealtimeServerEvent)

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_sim{next(_ids):06d}"


def event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": new_id("event"), **fields}


def response_object(response_id: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "output": output,
        "output_modalities": ["audio"],
    }


def assistant_item(item_id: str, status: str, transcript: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_audio", "transcript": transcript}],
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def user_audio_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def session_object(session: dict[str, Any], model: str) -> dict[str, Any]:
    return {"object": "realtime.session", "id": new_id("sess"), "model": model, **session}


def merge_session(session: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply a `session.update`'s `session` to the session object, nested fields included."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(session.get(key), dict):
            merge_session(session[key], value)
        else:
            session[key] = value
