"""What a session uses from its providers, speculation included, for the cost per minute.

The meter sits where the pipeline hands work to a provider, so it sees what LiveKit's metrics
do not: an LLM request cancelled before its first token reports no metrics at all, and one
cancelled later reports no token counts. So:

- LLM: every `llm_node` run is a request (preemptive and speculative ones included); its
  prompt (the chat context and tool schemas as sent) and what it streamed before it ended or
  was cancelled are counted: the prompt in tokens of about 4 characters (the rate of Llama
  3's tokenizer on English), the stream a token per content delta.
- TTS: every chunk the `SpeakableChunker` hands a TTS is sent to it and billed, whether its
  audio is played or thrown away; a reply whose synthesis started is one request.
- STT: the audio streamed to it, which is also the conversation's length.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from livekit import rtc
from livekit.agents import FlushSentinel, llm

from pipelines.contracts.prices import Usage
from pipelines.contracts.settings import TtsProvider

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


class UsageMeter:
    """Counts one session's provider usage; `usage` is the running total."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._schemas: dict[tuple[int, ...], int] = {}

    def audio(self, frame: rtc.AudioFrame) -> None:
        self.usage.audio_s += frame.samples_per_channel / frame.sample_rate

    def llm_request(self, chat_ctx: llm.ChatContext, tools: Sequence[llm.Tool]) -> None:
        messages, _ = chat_ctx.to_provider_format("openai")
        self.usage.llm_requests += 1
        self.usage.llm_prompt_tokens += estimate_tokens(json.dumps(messages)) + self._tools(tools)

    def llm_chunk(self, chunk: llm.ChatChunk | str | FlushSentinel) -> None:
        """One streamed piece: a content delta is a token, as OpenAI-style streams send them;
        a tool call counts what its name and arguments take."""
        if isinstance(chunk, str):
            self.usage.llm_completion_tokens += 1 if chunk else 0
        elif isinstance(chunk, llm.ChatChunk) and chunk.delta is not None:
            delta = chunk.delta
            self.usage.llm_completion_tokens += 1 if delta.content else 0
            for call in delta.tool_calls:
                self.usage.llm_completion_tokens += estimate_tokens(call.name + call.arguments)

    def tts_reply(self) -> None:
        self.usage.tts_requests += 1

    def tts_chunk(self, provider: TtsProvider, chunk: str) -> None:
        by = self.usage.tts_characters_by
        by[provider] = by.get(provider, 0) + len(chunk.strip())

    def _tools(self, tools: Sequence[llm.Tool]) -> int:
        key = tuple(id(tool) for tool in tools)
        if key not in self._schemas:
            schemas = llm.ToolContext(list(tools)).parse_function_tools("openai")
            self._schemas[key] = estimate_tokens(json.dumps(schemas)) if schemas else 0
        return self._schemas[key]
