"""What `voicegw talk` reports: one model for both modes and for `voicegw compare`.

A turn is one user utterance and everything the agent did about it (tool calls, filler,
answer). `TalkResult` is the `voicegw talk --json` document; its JSON Schema is the contract
DESIGN.md gives for it. `TalkRun` is one conversation from a recording as the lab ran it: the
result, and the timeline it was measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from pipelines.contracts import Mode
from pipelines.contracts.messages import ToolStatus

from .audio import Samples, Utterance

STAGES = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")


class ToolCall(BaseModel):
    name: str
    arguments: Any = Field(description="the model's arguments (the raw text when not JSON)")
    status: ToolStatus | None = Field(description="null when the call never finished")


class Turn(BaseModel):
    """One user utterance and everything the agent did about it; latencies in ms, null where a
    mode cannot observe the stage."""

    user_text: str = ""
    assistant_text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    eou_ms: float | None = None
    stt_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    voice_to_voice_ms: float | None = Field(
        None,
        description="true end of speech in the input to the first audible sample played",
    )


class TalkResult(BaseModel):
    """`voicegw talk --json`: stdout holds only this object."""

    mode: Mode
    turns: list[Turn]


@dataclass
class TalkRun:
    """One conversation from a recording, in either mode."""

    result: TalkResult
    # perf_counter() when the mode's turn detector ended each turn (Silero, or OpenAI's VAD)
    turn_ends: list[float | None]
    utterances: tuple[Utterance, ...]
    output: Samples  # the agent's audio on the input's timeline
    output_rate: int
    origin: float  # perf_counter() of input sample 0
    sounds: list[float]  # perf_counter() of each played segment's first audible sample

    @property
    def turns(self) -> list[Turn]:
        return self.result.turns


def format_ms(value: float | None, unit: str = " ms") -> str:
    """A latency for people: whole milliseconds, or n/a."""
    return "n/a" if value is None else f"{value:.0f}{unit}"
