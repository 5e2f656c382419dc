"""Both modes record into one history, through the simulated stack: a livekit session (the
pipeline with the real plugins, recorded as an agent job process records, by a history of its
own on the same database) that falls back (reported to the gateway) and goes on in openai
mode (the relay, reached with the official SDK on the ticket the fallback issued). The
session reads back whole from the admin API, with both halves, their turns and tool calls;
nothing in the database is a secret. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from livekit.agents.vad import VAD
from pydantic import SecretStr
from sqlalchemy import select

from history import History, HistoryConfig
from history.schema import Base
from pipelines.livekit.state import RecordingPublisher
from simulators.openai_realtime import CallTool, RealtimeSimulator, Say
from voicegw.lab import audio
from voicegw.lab.talk_livekit import talk
from voicegw.serve import running_gateway
from voicegw.simulate import SimulatedStack

from ...relay.conftest import collect_until, speak
from .conftest import TOOL_TEXT, Providers

API_KEY = "admin-key-" + "k" * 32
SESSION = "hist-both"
USER = "ann@example.com"
EMAIL = {"to": "bob@example.com", "subject": "Notes", "body": "(simulated) the notes"}


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {
        "N8N_TIMEOUT_SECONDS": "3",
        "GATEWAY_API_KEY": API_KEY,
        "LIVEKIT_DISPATCH_CHECK": "false",
        "OPENAI_VAD_SILENCE_MS": "200",
    }


@pytest.fixture
async def gateway_history(database_url: str) -> AsyncIterator[History]:
    """The gateway's (migrates, started by the app)."""
    history = History(HistoryConfig(url=database_url), retention=False)
    yield history
    await history.aclose()


@pytest.fixture
async def agent_history(database_url: str) -> AsyncIterator[History]:
    """An agent job process's: no start(), its first session starts the writer."""
    history = History(HistoryConfig(url=database_url), retention=False)
    yield history
    await history.aclose()


async def test_a_session_in_both_modes_is_recorded_whole_and_without_secrets(
    stack: SimulatedStack,
    providers: Providers,
    realtime: RealtimeSimulator,
    one_tool: audio.Conversation,
    vad: VAD,
    http: aiohttp.ClientSession,
    gateway_history: History,
    agent_history: History,
) -> None:
    secrets: list[str] = [API_KEY]
    async with running_gateway(stack.settings, history=gateway_history) as gateway:
        client = httpx.AsyncClient(base_url=gateway.url, timeout=10)
        async with client:
            issued = await client.get(
                "/v1/session", params={"mode": "livekit", "session_id": SESSION, "user": USER}
            )
            assert issued.status_code == 200, issued.text
            secrets.append(issued.json()["livekit"]["token"])

            # livekit half: the agent job, recording into its own process's history
            providers.deepgram.transcripts[:] = [TOOL_TEXT]
            livekit = await talk(
                providers.options,
                one_tool.samples,
                one_tool.sample_rate,
                vad=vad,
                http_session=http,
                publisher=RecordingPublisher(),
                session_id=SESSION,
                utterances=one_tool.utterances,
                history=agent_history.recorder.open(session_id=SESSION, mode="livekit", user=USER),
            )
            assert [t.user_text for t in livekit.result.turns] == [TOOL_TEXT]

            fallback = await client.post(
                "/v1/session/fallback",
                json={"session_id": SESSION, "reason": "room_disconnected: agent left"},
            )
            assert fallback.status_code == 200, fallback.text
            ticket = fallback.json()["relay"]["ticket"]
            secrets.append(ticket)

            # openai half: the relay, on the ticket the fallback issued
            realtime.script(
                CallTool("send_email", EMAIL, call_id="call_mail"),
                Say("(simulated) I sent the email.", audio_ms=100),
            )
            sdk = openai.AsyncOpenAI(
                api_key=ticket,
                base_url=f"{gateway.url}/v1",
                websocket_base_url=f"{gateway.server.ws_url}/v1",
            )
            try:
                async with sdk.realtime.connect(model="gpt-realtime") as connection:
                    await speak(connection)
                    await collect_until(connection, lambda f: f["type"] == "metrics.turn")
            finally:
                await sdk.close()

            # the relay's half ends as its session closes: wait for it to be written
            await _until_recorded(client, lambda d: len(d["legs"]) == 2 and d["ended_at"])
            await agent_history.recorder.flush()
            detail = await _until_recorded(
                client, lambda d: all(leg["close_reason"] for leg in d["legs"])
            )
            listed = (
                await client.get(
                    "/v1/admin/sessions",
                    params={"fell_back": "true", "user": USER.upper(), "mode": "livekit"},
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )
            ).json()

        assert [s["id"] for s in listed["sessions"]] == [SESSION]
        assert (detail["user"], detail["mode"], detail["reason"]) == (USER, "livekit", "url_flag")
        assert detail["modes"] == ["livekit", "openai"]
        assert detail["fell_back"] and detail["fallback_reason"] == "room_disconnected: agent left"
        assert [(r["kind"], r["mode"], r["reason"]) for r in detail["routing"]] == [
            ("issued", "livekit", "url_flag"),
            ("fallback", None, "room_disconnected: agent left"),
            ("issued", "openai", "fallback"),
        ]
        agent, relay = detail["legs"]
        assert agent["mode"] == "livekit" and relay["mode"] == "openai"

        # the agent's turn: what was heard and said, the tool call, the stage latencies
        (turn,) = agent["turns"]
        said = [(s["role"], s["text"]) for s in turn["said"]]
        assert ("user", TOOL_TEXT) in said
        assert any(role == "agent" and text for role, text in said)
        (call,) = turn["tool_calls"]
        assert (call["name"], call["status"]) == ("query_database", "ok")
        assert call["arguments"] == {"query": "travel policy"}
        assert call["idempotency_key"].startswith(f"{SESSION}:")
        assert call["output"]
        for stage in ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms"):
            assert turn[stage] is not None, stage
        assert turn["voice_to_voice_ms"] == livekit.result.turns[0].voice_to_voice_ms

        # the relay's turn
        (relay_turn,) = [t for t in relay["turns"] if t["turn"] == 1]
        assert ("agent", "(simulated) I sent the email.") in [
            (s["role"], s["text"]) for s in relay_turn["said"]
        ]
        assert any(s["role"] == "user" and s["text"] for s in relay_turn["said"])
        (mail,) = relay_turn["tool_calls"]
        assert (mail["name"], mail["status"], mail["arguments"]) == ("send_email", "ok", EMAIL)
        assert mail["idempotency_key"] == f"{SESSION}:call_mail"
        assert relay_turn["voice_to_voice_ms"] is not None
        assert relay["close_reason"]

        # nothing in any table is a secret value
        for value in vars(stack.settings).values():
            if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 8:
                secrets.append(value.get_secret_value())
        dump = await _everything(gateway_history)
        assert SESSION in dump and "travel policy" in dump  # the scan reads real rows
        leaked = [s for s in secrets if s in dump]
        assert leaked == [], f"{len(leaked)} secret values stored"


async def _until_recorded(client: httpx.AsyncClient, done: Any) -> dict[str, Any]:
    """The session as the admin API reads it, once `done` (polled: the writer runs on its own
    clock, a batch a second), within 10 s."""
    async with asyncio.timeout(10):
        while True:
            response = await client.get(
                f"/v1/admin/sessions/{SESSION}", headers={"Authorization": f"Bearer {API_KEY}"}
            )
            if response.status_code == 200:
                detail: dict[str, Any] = response.json()
                if done(detail):
                    return detail
            else:
                assert response.status_code == 404, response.text
            await asyncio.sleep(0.1)


async def _everything(history: History) -> str:
    """Every row of every table, as text."""
    rows: list[str] = []
    async with history.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in (await connection.execute(select(table))).all():
                rows.append(json.dumps([str(v) for v in row]))
    return "\n".join(rows)
