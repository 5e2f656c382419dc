"""The history's database going away under a running gateway: relay conversations go on as if
nothing happened, /readyz says the history is degraded (the gateway stays in rotation),
/metrics counts what was dropped, the admin API says the database is unavailable, and once the
database is back recording resumes by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from history import History, HistoryConfig
from simulators.openai_realtime import RealtimeSimulator, Say
from tests.postgres_server import PostgresServer, running_postgres
from tests.relay.conftest import collect_until, speak
from tests.stack import metric, until
from voicegw.serve import running_gateway
from voicegw.simulate import SimulatedStack

API_KEY = "admin-key-" + "k" * 32
BEARER = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {
        "GATEWAY_API_KEY": API_KEY,
        "VOICE_DEFAULT_MODE": "openai",
        "OPENAI_VAD_SILENCE_MS": "200",
    }


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
async def small_history(own_postgres: PostgresServer) -> AsyncIterator[History]:
    """A queue of 20 records: one outage overflows it."""
    history = History(
        HistoryConfig(url=await own_postgres.new_database(), queue_size=20), retention=False
    )
    yield history
    own_postgres.thaw()
    await history.aclose()


async def _conversation(gateway_url: str, ws_url: str, session_id: str) -> list[str]:
    """One relay turn; the types of the frames the page got, up to its metrics.turn."""
    async with httpx.AsyncClient(base_url=gateway_url) as http:
        issued = await http.get("/v1/session", params={"session_id": session_id})
        issued.raise_for_status()
    sdk = openai.AsyncOpenAI(
        api_key=issued.json()["relay"]["ticket"],
        base_url=f"{gateway_url}/v1",
        websocket_base_url=f"{ws_url}/v1",
    )
    try:
        async with sdk.realtime.connect(model="gpt-realtime") as connection:
            await speak(connection)
            frames = await collect_until(connection, lambda f: f["type"] == "metrics.turn")
    finally:
        await sdk.close()
    return [f["type"] for f in frames if not f["type"].startswith("response.output_audio.d")]


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_sessions_go_on_while_the_history_database_is_down(
    stack: SimulatedStack,
    realtime: RealtimeSimulator,
    own_postgres: PostgresServer,
    small_history: History,
    outage: str,
) -> None:
    realtime.script(*[Say("(simulated) Noted.", audio_ms=60)] * 3)
    dropped_before = metric("voicegw_history_dropped_total", reason="queue_full")
    async with running_gateway(stack.settings, history=small_history) as gateway:
        url, ws = gateway.url, gateway.server.ws_url
        async with httpx.AsyncClient(base_url=url, headers=BEARER) as admin:

            async def readiness() -> dict[str, Any]:
                body: dict[str, Any] = (await admin.get("/readyz")).json()
                return body

            normal = await _conversation(url, ws, "before")
            await small_history.recorder.flush()  # written before the outage (once a second)
            assert (await readiness())["history"]["state"] == "ok"

            if outage == "stopped":
                own_postgres.stop()
            else:
                own_postgres.freeze()
            during = await _conversation(url, ws, "during")
            assert during == normal  # the page saw the same conversation

            async def degraded() -> bool:
                return bool((await readiness())["history"]["state"] == "degraded")

            await until(degraded, "/readyz says the history is degraded", timeout_s=30)
            ready = await readiness()
            assert ready["status"] == "degraded" and ready["history"]["kind"] == "postgresql"
            assert (await admin.get("/readyz")).status_code == 200  # still in rotation
            for n in range(25):  # more records than the queue holds
                issued = await admin.get("/v1/session", params={"session_id": f"burst{n}"})
                assert issued.status_code == 200
            assert (await readiness())["history"]["dropped"] > 0
            exposed = (await admin.get("/metrics")).text
            assert "voicegw_history_dropped_total" in exposed
            assert metric("voicegw_history_dropped_total", reason="queue_full") > dropped_before
            if outage == "stopped":
                refused = await admin.get("/v1/admin/sessions")
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "history_unavailable"

            if outage == "stopped":
                own_postgres.start()
            else:
                own_postgres.thaw()

            async def recovered() -> bool:
                return bool((await readiness())["history"]["state"] == "ok")

            await until(recovered, "recording resumes by itself", timeout_s=40)
            await _conversation(url, ws, "after")
            await small_history.recorder.flush()

            async def after_recorded() -> bool:
                response = await admin.get("/v1/admin/sessions/after")
                return response.status_code == 200 and len(response.json()["legs"]) == 1

            await until(after_recorded, "a session after the outage is recorded")
            before = (await admin.get("/v1/admin/sessions/before")).json()
            assert before["legs"][0]["turns"], "what was written before the outage is kept"
