"""`voicegw talk`: one conversation from a WAV file, in either mode, with no LiveKit server.

livekit runs the configured pipeline in-process (`talk_livekit`); openai goes through this
gateway's own relay, served in-process, as the page would use it (`talk_openai`). Both report
the same `TalkResult`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from pipelines.contracts import Mode, Settings
from pipelines.livekit.pipeline import PipelineOptions

from ..serve import running_gateway
from ..simulate import simulated_stack
from .audio import Samples
from .talk_livekit import talk_livekit
from .talk_openai import talk_openai
from .turns import STAGES, TalkRun, Turn, format_ms


def missing_keys(settings: Settings, mode: Mode) -> list[str]:
    """Provider keys `mode` needs that are not set."""
    if mode == "livekit":
        return PipelineOptions.from_settings(settings).missing_keys()
    return settings.missing_for("openai")


async def run_talk(
    settings: Settings,
    mode: Mode,
    samples: Samples,
    sample_rate: int,
    *,
    profile: str | None,
    on_turn: Callable[[Turn], None] | None = None,
) -> TalkRun:
    """One conversation in `mode`; `profile` runs every provider as a simulator; `on_turn`
    hears of each turn as it ends."""
    async with contextlib.AsyncExitStack() as stack:
        if profile is not None:
            simulated = await stack.enter_async_context(simulated_stack(settings, profile))
            settings = simulated.settings
        if mode == "livekit":
            return await talk_livekit(settings, samples, sample_rate, on_turn=on_turn)
        gateway = await stack.enter_async_context(running_gateway(settings))
        return await talk_openai(
            gateway.url,
            samples,
            sample_rate,
            model=settings.openai_realtime_model,
            on_turn=on_turn,
        )


def render(turns: list[Turn]) -> str:
    """The turns for people: transcripts, tool calls and latency per stage."""
    lines = []
    for number, turn in enumerate(turns, 1):
        lines.append(f"turn {number}")
        lines.append(f"  user:      {turn.user_text}")
        for call in turn.tool_calls:
            arguments = json.dumps(call.arguments)
            lines.append(f"  tool:      {call.name}({arguments}) -> {call.status}")
        lines.append(f"  assistant: {turn.assistant_text}")
        latency = (f"{stage[:-3]} {format_ms(getattr(turn, stage))}" for stage in STAGES)
        lines.append("  latency:   " + ", ".join(latency))
    return "\n".join(lines)
