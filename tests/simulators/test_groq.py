"""The Groq simulator refuses an unknown model as Groq does, and streams tool calls and
token-sized answers the real plugin (livekit-plugins-groq) understands, with usage counted."""

from __future__ import annotations

import json
import time

import pytest
from livekit.agents import APIConnectOptions, APIStatusError
from livekit.agents.llm import ChatContext, FunctionToolCall
from livekit.plugins import groq

from pipelines.contracts import N8nExecutor
from pipelines.livekit.tools import ToolListeners, build_tools
from simulators.groq import GroqSimulator, ToolRule, tokens
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


async def test_answers_stream_token_by_token_and_usage_counts_them() -> None:
    sim = GroqSimulator(reply_tail="That is the whole answer.")
    async with serve(sim.app) as server:
        chat = ChatContext()
        chat.add_message(role="user", content="What is on my calendar today?")
        model = groq.LLM(
            model="llama-3.1-8b-instant", api_key=sim.api_key, base_url=f"{server.url}/openai/v1"
        )
        deltas: list[str] = []
        usage = None
        async with model.chat(chat_ctx=chat, conn_options=NO_RETRY) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    deltas.append(chunk.delta.content)
                usage = chunk.usage or usage
        await model.aclose()
    answer = "(simulated) You said: What is on my calendar today? That is the whole answer."
    assert "".join(deltas) == answer
    assert deltas == tokens(answer)
    # about as many pieces as a BPE tokenizer makes: more than words, none longer than a word
    assert len(answer.split()) < len(deltas) < 2 * len(answer.split())
    assert usage is not None and usage.completion_tokens == len(deltas)
    sent = json.dumps(sim.received[0]["messages"]) + json.dumps(sim.received[0].get("tools", []))
    assert usage.prompt_tokens == -(-len(sent) // 4)
    assert (sim.prompt_tokens, sim.completion_tokens) == (usage.prompt_tokens, len(deltas))


def test_token_pieces_join_back_into_the_text() -> None:
    text = "Sure: 12345 items, e.g. the onboarding checklist."
    assert "".join(tokens(text)) == text
    assert " onbo" in tokens(text) and "," in tokens(text) and " 123" in tokens(text)


async def test_tokens_after_the_first_come_at_tokens_per_s() -> None:
    rate = 40.0
    sim = GroqSimulator(tokens_per_s=rate, reply_tail="and a few more words to pace out.")
    async with serve(sim.app) as server:
        chat = ChatContext()
        chat.add_message(role="user", content="Pace me.")
        model = groq.LLM(
            model="llama-3.1-8b-instant", api_key=sim.api_key, base_url=f"{server.url}/openai/v1"
        )
        arrivals: list[float] = []
        async with model.chat(chat_ctx=chat, conn_options=NO_RETRY) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    arrivals.append(time.perf_counter())
        await model.aclose()
    pieces = tokens("(simulated) You said: Pace me. and a few more words to pace out.")
    assert len(arrivals) == len(pieces) > 10
    # streamed as they are made, not sent in one piece at the end: the last token comes at
    # least (n - 1) / rate after the first (a lower bound, so a busy machine cannot fail it)
    assert arrivals[-1] - arrivals[0] >= (len(pieces) - 1) / rate * 0.95


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
