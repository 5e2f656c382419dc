"""What the protocol core asks its I/O layer to do. Plain frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.contracts import MetricsTurn, VoiceError


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the client frame being handled to OpenAI exactly as it arrived."""


FORWARD: tuple[Forward] = (Forward(),)
"""What `client_frame` returns for nearly every frame (audio appends): one shared value, so
the I/O layer can spot it by identity and the hot path allocates nothing."""


@dataclass(frozen=True, slots=True)
class ToUpstream:
    """Send this text frame to OpenAI."""

    text: str


@dataclass(frozen=True, slots=True)
class ToClient:
    """Send this text frame to the client (a state message or an error). `turn` is set when
    the frame is a turn's `metrics.turn`, for the I/O layer's latency histograms."""

    text: str
    turn: MetricsTurn | None = None


@dataclass(frozen=True, slots=True)
class StartTool:
    """Run a catalogue tool with validated arguments; feed the result to `tool_finished()`."""

    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """End the session: tell the client `error` (if any) and close with `code`."""

    code: int
    reason: str
    error: VoiceError | None = None


Action = Forward | ToUpstream | ToClient | StartTool | Close
