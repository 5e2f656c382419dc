"""The Groq simulator refuses an unknown model as Groq does, and streams tool calls the real
plugin (livekit-plugins-groq) understands."""

from __future__ import annotations

import pytest
from livekit.agents import APIConnectOptions, APIStatusError
from livekit.agents.llm import ChatContext, FunctionToolCall
from livekit.plugins import groq

from pipelines.contracts import N8nExecutor
from pipelines.livekit.tools import ToolListeners, build_tools
from simulators.groq import GroqSimulator, ToolRule
from simulators.server import serve

NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.1, timeout=2.0)


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


async def test_groq_lists_its_models_to_the_real_client() -> None:
    """What OpenAI-compatible clients prewarm with (livekit-plugins-openai's LLM.prewarm);
    without it every `voicegw talk` logged a 404."""
    from groq import AsyncGroq, AuthenticationError

    sim = GroqSimulator()
    async with serve(sim.app) as server:
        async with AsyncGroq(api_key=sim.api_key, base_url=server.url) as client:
            listed = await client.models.list()
        assert {model.id for model in listed.data} == set(sim.models)
        async with AsyncGroq(api_key="wrong", base_url=server.url, max_retries=0) as client:
            with pytest.raises(AuthenticationError):
                await client.models.list()
