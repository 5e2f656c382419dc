"""What the ElevenLabs API refuses, as its simulator checks it: the catalogue (models, output
formats, limits) and the validation of query parameters, request bodies, voice settings and
WebSocket messages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams

MODELS = frozenset(
    "eleven_monolingual_v1 eleven_multilingual_v1 eleven_multilingual_v2 eleven_turbo_v2 "
    "eleven_turbo_v2_5 eleven_flash_v2 eleven_flash_v2_5 eleven_v3".split()
)
OUTPUT_FORMATS = frozenset(
    ["mp3_22050_32", "mp3_24000_48", "mp3_44100"]
    + [f"mp3_44100_{kbps}" for kbps in (32, 64, 96, 128, 192)]
    + [f"pcm_{rate}" for rate in (8000, 16000, 22050, 24000, 32000, 44100, 48000)]
    + ["ulaw_8000", "alaw_8000"]
    + [f"opus_48000_{kbps}" for kbps in (32, 64, 96, 128, 192)]
)
MAX_CONTEXTS = 5
MAX_INACTIVITY_TIMEOUT_S = 180
CHARACTER_LIMITS = {"eleven_flash_v2_5": 40_000, "eleven_turbo_v2_5": 40_000, "eleven_v3": 5_000}
CHARACTER_LIMITS |= {"eleven_flash_v2": 30_000, "eleven_turbo_v2": 30_000}
DEFAULT_CHARACTER_LIMIT = 10_000
DEFAULT_CHUNK_SCHEDULE = (120, 160, 250, 290)
_NOT_ON_MULTI_CONTEXT = frozenset({"eleven_v3"})  # it has its own text-to-dialogue socket
_NO_TEXT_NORMALIZATION = frozenset({"eleven_turbo_v2_5", "eleven_flash_v2_5"})
_VOICE_ID = re.compile(r"^[A-Za-z0-9]{20}$")
_BOOLEAN_QUERY = (
    "enable_logging enable_ssml_parsing sync_alignment auto_mode apply_language_text_normalization"
).split()
_VOICE_SETTINGS = {"stability": (0.0, 1.0), "similarity_boost": (0.0, 1.0), "style": (0.0, 1.0)}
_VOICE_SETTINGS["speed"] = (0.7, 1.2)
_MESSAGE_FIELDS: dict[str, type] = dict.fromkeys(("text", "context_id", "xi_api_key"), str)
_MESSAGE_FIELDS |= {"authorization": str} | dict.fromkeys(
    ("flush", "close_context", "close_socket"), bool
)


@dataclass(frozen=True)
class Refusal:
    """What the API refuses: HTTP `status`, `detail.status` name and message."""

    status: int
    name: str
    message: str


def query_problem(query: QueryParams, *, websocket: bool) -> tuple[str, str] | None:
    """(parameter, message) for a query parameter that fails validation."""
    output_format = query.get("output_format", "mp3_44100_128")
    if output_format not in OUTPUT_FORMATS:
        return "output_format", f"unsupported output_format {output_format[:30]!r}"
    for name in _BOOLEAN_QUERY:
        if query.get(name, "false") not in ("true", "false"):
            return name, f"{name} must be true or false"
    if query.get("apply_text_normalization", "auto") not in ("auto", "on", "off"):
        return "apply_text_normalization", "apply_text_normalization must be auto, on or off"
    latency = query.get("optimize_streaming_latency", "0")
    if not latency.isdigit() or int(latency) > 4:
        return "optimize_streaming_latency", "optimize_streaming_latency must be 0 to 4"
    if websocket:
        timeout = query.get("inactivity_timeout", "20")
        if not timeout.isdigit() or not 1 <= int(timeout) <= MAX_INACTIVITY_TIMEOUT_S:
            return "inactivity_timeout", "inactivity_timeout must be 1 to 180 seconds"
        if not query.get("model_id"):
            return "model_id", "model_id is required"
    return None


def body_problem(body: Any) -> tuple[str, str] | None:
    if not isinstance(body, dict):
        return "body", "the body must be a JSON object"
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        return "text", "text is required"
    if not isinstance(body.get("model_id", ""), str):
        return "model_id", "model_id must be a string"
    if body.get("apply_text_normalization", "auto") not in ("auto", "on", "off"):
        return "apply_text_normalization", "apply_text_normalization must be auto, on or off"
    settings = body.get("voice_settings")
    problem = None if settings is None else settings_problem(settings)
    return ("voice_settings", problem) if problem else None


def settings_problem(settings: Any) -> str | None:
    if not isinstance(settings, dict):
        return "voice_settings must be an object"
    for name, (low, high) in _VOICE_SETTINGS.items():
        value = settings.get(name)
        if value is not None and (type(value) not in (int, float) or not low <= value <= high):
            return f"voice_settings.{name} must be a number from {low} to {high}"
    if not isinstance(settings.get("use_speaker_boost", False), bool):
        return "voice_settings.use_speaker_boost must be a boolean"
    return None


def schedule_problem(config: Any) -> str | None:
    if not isinstance(config, dict):
        return "generation_config must be an object"
    schedule = config.get("chunk_length_schedule", list(DEFAULT_CHUNK_SCHEDULE))
    if not isinstance(schedule, list) or not schedule or not all(_in_range(n) for n in schedule):
        return "generation_config.chunk_length_schedule items must be from 50 to 500"
    return None


def _in_range(length: Any) -> bool:
    return type(length) in (int, float) and 50 <= length <= 500


def refusal_for(
    voice_id: str, model: str, normalization: str, output_format: str, *, text: str | None
) -> Refusal | None:
    """What the service refuses against its catalogue (`text`: an HTTP request's)."""
    if model not in MODELS:
        message = f"A model with model ID {model[:40]!r} does not exist"
        return Refusal(400, "model_not_found", message)
    if text is None and model in _NOT_ON_MULTI_CONTEXT:
        message = f"{model} is not available on the multi-context WebSocket"
        return Refusal(400, "unsupported_model", message)
    if normalization == "on" and model in _NO_TEXT_NORMALIZATION:
        message = f"apply_text_normalization cannot be on for {model}"
        return Refusal(400, "unsupported_model", message)
    if not _VOICE_ID.match(voice_id):
        message = f"A voice with voice_id {voice_id[:40]!r} was not found."
        return Refusal(400, "voice_not_found", message)
    limit = CHARACTER_LIMITS.get(model, DEFAULT_CHARACTER_LIMIT)
    if text is not None and len(text) > limit:
        message = f"This request's text has {len(text)} characters; the limit is {limit}."
        return Refusal(400, "max_character_limit_exceeded", message)
    if not output_format.startswith(("pcm_", "mp3_")):
        return Refusal(400, "not_simulated", f"(simulated) {output_format} audio is not simulated")
    return None


def message_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "a message must be a JSON object"
    for key, kind in _MESSAGE_FIELDS.items():
        if key in data and not isinstance(data[key], kind):
            return f"{key} must be a {kind.__name__}"
    if not any(key in data for key in ("text", "flush", "close_context", "close_socket")):
        return "a message needs text, flush, close_context or close_socket"
    return None
