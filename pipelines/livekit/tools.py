"""The shared tool catalogue as LiveKit function tools, executed by the shared n8n executor.

Each tool keeps the catalogue's own schema (Chat Completions shape, what Groq receives), runs
through `N8nExecutor` with the gateway's session id and the model's own call id, and says a
short filler once when the webhook is slow.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import RawFunctionTool

from pipelines.contracts import CATALOGUE, N8nExecutor, ToolResult, ToolSpec


class ToolListener(Protocol):
    def tool_started(self, call_id: str, name: str, arguments: dict[str, Any]) -> None: ...

    def tool_finished(self, result: ToolResult) -> None: ...


class ToolListeners:
    """Fans tool events out to several listeners (state messages, turn records)."""

    def __init__(self, *listeners: ToolListener) -> None:
        self._listeners = listeners

    def tool_started(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        for listener in self._listeners:
            listener.tool_started(call_id, name, arguments)

    def tool_finished(self, result: ToolResult) -> None:
        for listener in self._listeners:
            listener.tool_finished(result)


def build_tools(
    executor: N8nExecutor,
    *,
    session_id: str,
    listener: ToolListener,
    filler_s: float = 0.4,
    filler_text: str = "One moment.",
    catalogue: Sequence[ToolSpec] = CATALOGUE,
) -> list[RawFunctionTool[Any, Any]]:
    """Function tools for `catalogue`. `filler_s` <= 0 disables the filler."""

    def bind(spec: ToolSpec) -> RawFunctionTool[Any, Any]:
        async def run(raw_arguments: dict[str, Any], ctx: RunContext[Any]) -> str:
            call_id = ctx.function_call.call_id
            listener.tool_started(call_id, spec.name, raw_arguments)
            async with _filler(ctx, filler_text, filler_s):
                result = await executor.execute(
                    session_id=session_id,
                    call_id=call_id,
                    name=spec.name,
                    arguments=raw_arguments,
                )
            listener.tool_finished(result)
            return result.output

        function = spec.to_chat_completions()["function"]
        return function_tool(run, raw_schema=function)

    return [bind(spec) for spec in catalogue]


@contextlib.asynccontextmanager
async def _filler(ctx: RunContext[Any], text: str, delay_s: float) -> AsyncIterator[None]:
    # The session says `text` at most once, and only if the tool is still running after
    # `delay_s` of the agent being otherwise silent.
    if delay_s <= 0:
        yield
        return
    async with ctx.with_filler(text, delay=delay_s):
        yield
