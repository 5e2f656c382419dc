"""The simulators reject what the real services would, so a client bug fails a test; and the
real clients understand what they answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError
from livekit.agents.llm import ChatContext, FunctionToolCall
from livekit.plugins import deepgram, groq

from pipelines.contracts import N8nExecutor
from pipelines.livekit.tools import ToolListeners, build_tools
from simulators.deepgram import DeepgramSimulator
from simulators.groq import GroqSimulator, ToolRule
from simulators.server import serve

NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=2.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_deepgram_refuses_a_wrong_key(http: aiohttp.ClientSession) -> None:
    sim = DeepgramSimulator()
    async with serve(sim.app) as server:
        stt = deepgram.STT(
            api_key="wrong-key-42", base_url=f"{server.url}/v1/listen", http_session=http
        )
        stream = stt.stream(conn_options=NO_RETRY)
        stream.push_frame(
            rtc.AudioFrame(
                data=b"\0\0" * 160, sample_rate=16000, num_channels=1, samples_per_channel=160
            )
        )
        with pytest.raises((APIStatusError, APIConnectionError)) as caught:
            async for _ in stream:
                pass
        await stream.aclose()
        await stt.aclose()
    assert "wrong-key-42" not in repr(caught.value)
    assert sim.rejected == ["Authorization must be 'Token <api key>'"]
    assert sim.connections == []


async def test_groq_refuses_an_unknown_model_and_streams_tool_calls() -> None:
    sim = GroqSimulator(rules=[ToolRule("budget", "query_database", {"query": "budget"})])
    async with serve(sim.app) as server:
        chat = ChatContext()
        chat.add_message(role="user", content="What is the budget?")

        wrong = groq.LLM(model="llama-9", api_key=sim.api_key, base_url=f"{server.url}/openai/v1")
        with pytest.raises(APIStatusError) as caught:
            async with wrong.chat(chat_ctx=chat, conn_options=NO_RETRY) as stream:
                async for _ in stream:
                    pass
        assert caught.value.status_code == 400
        assert sim.rejected == ["The model `llama-9` does not exist"]
        await wrong.aclose()

        model = groq.LLM(
            model="llama-3.1-8b-instant", api_key=sim.api_key, base_url=f"{server.url}/openai/v1"
        )
        executor = N8nExecutor(None)
        tools = build_tools(executor, session_id="s", listener=ToolListeners())
        calls: list[FunctionToolCall] = []
        async with model.chat(chat_ctx=chat, tools=list(tools), conn_options=NO_RETRY) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.tool_calls:
                    calls.extend(chunk.delta.tool_calls)
        await model.aclose()
        await executor.aclose()
    assert [(c.name, c.arguments) for c in calls] == [("query_database", '{"query": "budget"}')]
    assert calls[0].call_id.startswith("call_")
    sent_tools = sim.received[-1]["tools"]
    assert [t["function"]["name"] for t in sent_tools] == ["send_email", "query_database"]
    assert sent_tools[1]["function"]["parameters"]["required"] == ["query"]
