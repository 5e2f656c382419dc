"""Two gateway replicas (real `voicegw serve` processes on two ports, each on its own simulated
providers) sharing one redis-server: a ticket is used once across both, the breaker is one
breaker with one probe, a fallback is sticky everywhere, and when Redis dies and comes back
each replica does what the README's "Several replicas" says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.redis_server import RedisServer, free_port, new_prefix, running_redis
from tests.stack import until

pytestmark = pytest.mark.e2e

API_KEY = "replica-test-api-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ENV = {
    "GATEWAY_SECRET": "replica-test-gateway-secret-" * 2,
    "GATEWAY_API_KEY": API_KEY,
    "BREAKER_COOLDOWN_SECONDS": "1",
    "BREAKER_PROBE_WINDOW_SECONDS": "300",
    "REDIS_TIMEOUT_SECONDS": "0.3",
}
START_TIMEOUT_S = 30.0


@dataclass
class Replica:
    """One `voicegw serve` process and a client for it."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def lines(self, msg: str) -> list[dict[str, Any]]:
        """This replica's JSON log lines saying `msg` so far."""
        self.log.seek(0)
        records = [
            json.loads(line) for line in self.log.read().splitlines() if line.startswith(b"{")
        ]
        return [r for r in records if r.get("msg") == msg]

    async def session(self, **params: str) -> dict[str, Any]:
        response = await self.client.get("/v1/session", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def launch(self, session_id: str) -> str:
        """A launch token for `session_id` (what the page URL carries)."""
        response = await self.client.post(
            "/v1/launch", json={"session_id": session_id}, headers=AUTH
        )
        assert response.status_code == 201, response.text
        return str(response.json()["page_url"].rsplit("launch=", 1)[1])

    async def fallback(self, session_id: str, token: str) -> None:
        response = await self.client.post(
            "/v1/session/fallback",
            json={"session_id": session_id, "reason": "livekit_connect_failed: test"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text

    async def ready(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.client.get("/readyz")).json()
        return body


def _environment(redis: RedisServer, prefix: str) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICE", "GATEWAY_", "LIVEKIT_", "OPENAI_", "REDIS_", "BREAKER_"))
    }
    return {**inherited, **ENV, "REDIS_URL": redis.url, "REDIS_KEY_PREFIX": prefix}


def _spawn(env: dict[str, str], port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "voicegw", "serve", "--simulate", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


@contextlib.asynccontextmanager
async def replicas(redis: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:
    """Replicas A and B on `redis`, under a key prefix of their own."""
    env = _environment(redis, new_prefix())
    started: list[Replica] = []
    with contextlib.ExitStack() as files:
        try:
            for name in ("A", "B"):
                port = free_port()
                log = files.enter_context(tempfile.TemporaryFile())
                started.append(Replica(name, port, _spawn(env, port, log), log))
            for replica in started:

                async def up(r: Replica = replica) -> bool:
                    assert r.process.poll() is None, f"{r.name} exited with {r.process.returncode}"
                    with contextlib.suppress(httpx.TransportError):
                        return (await r.client.get("/healthz")).status_code == 200
                    return False

                await until(up, f"replica {replica.name} serves", timeout_s=START_TIMEOUT_S)
            yield started[0], started[1]
        finally:
            for replica in started:
                replica.process.terminate()
            for replica in started:
                await asyncio.to_thread(replica.process.wait, 10)
                await replica.client.aclose()


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def relay_first_frame(replica: Replica, ticket: str) -> dict[str, Any]:
    async with connect(f"{replica.ws_url}/v1/realtime?ticket={ticket}") as ws:
        first: dict[str, Any] = json.loads(await ws.recv())
        return first


async def relay_close_code(replica: Replica, ticket: str) -> tuple[list[dict[str, Any]], int]:
    """The frames a refusing relay sends before it closes, and its close code."""
    frames: list[dict[str, Any]] = []
    async with connect(f"{replica.ws_url}/v1/realtime?ticket={ticket}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(await ws.recv()))
    assert closed.value.rcvd is not None
    return frames, closed.value.rcvd.code


async def test_a_ticket_from_a_is_used_once_on_b_and_refused_at_a(
    shared_redis: RedisServer,
) -> None:
    async with replicas(shared_redis) as (a, b):
        ticket = (await a.session(session_id="t1", mode="openai"))["relay"]["ticket"]
        assert (await relay_first_frame(b, ticket))["type"] == "agent.state"
        frames, code = await relay_close_code(a, ticket)
        assert (frames, code) == ([], 4403)


async def test_one_breaker_across_replicas_with_one_probe(shared_redis: RedisServer) -> None:
    async with replicas(shared_redis) as (a, b):
        for sid, asked, reported in (("f1", a, a), ("f2", b, b), ("f3", a, b)):
            token = await a.launch(sid)
            assert (await asked.session(launch=token, mode="livekit"))["mode"] == "livekit"
            await reported.fallback(sid, token)
        for replica in (a, b):
            decided = await replica.session(session_id=f"after-{replica.name}", mode="livekit")
            assert (decided["mode"], decided["reason"]) == ("openai", "breaker_open")

        async def half_open() -> bool:
            return bool((await b.ready())["breaker"]["state"] == "half_open")

        await until(half_open, "the cooldown passes")
        probes = await asyncio.gather(
            *(r.session(session_id=f"p{i}", mode="livekit") for i, r in enumerate([a, b] * 5))
        )
        modes = sorted((d["mode"], d["reason"]) for d in probes)
        assert modes == [("livekit", "url_flag")] + [("openai", "breaker_open")] * 9
        probe = next(d["session_id"] for d in probes if d["mode"] == "livekit")
        for replica in (a, b):
            view = (await replica.client.get("/v1/admin/routing", headers=AUTH)).json()
            assert view["breaker"]["probe_session_id"] == probe
            assert view["fallbacks_reported"] == 3
        # Each transition is logged once, by the replica that made it.
        opened = [r for r in a.lines("breaker state changed") + b.lines("breaker state changed")]
        assert sorted(r["breaker_state"] for r in opened) == ["half_open", "open"]


async def test_a_fallback_at_a_is_sticky_at_b(shared_redis: RedisServer) -> None:
    async with replicas(shared_redis) as (a, b):
        token = await a.launch("s1")
        assert (await a.session(launch=token, mode="livekit"))["mode"] == "livekit"
        await a.fallback("s1", token)
        decided = await b.session(launch=token, mode="livekit")
        assert (decided["mode"], decided["reason"]) == ("openai", "fallback")


async def test_redis_killed_and_restarted_mid_run() -> None:
    with running_redis() as redis:
        async with replicas(redis) as (a, b):
            ticket = (await a.session(session_id="k0", mode="openai"))["relay"]["ticket"]
            assert (await relay_first_frame(b, ticket))["type"] == "agent.state"

            redis.kill()
            ready = await a.ready()
            assert ready["status"] == "degraded" and ready["store"]["state"] == "degraded"
            assert (await a.client.get("/readyz")).status_code == 200
            for i in range(5):  # routing goes on from each replica's memory
                for replica in (a, b):
                    decided = await replica.session(session_id=f"k{i}", mode="livekit")
                    assert decided["mode"] == "livekit"
            ticket = (await b.session(session_id="k9", mode="openai"))["relay"]["ticket"]
            frames, code = await relay_close_code(b, ticket)  # tickets fail closed
            assert code == 1013
            assert [(f["type"], f["code"], f["fatal"]) for f in frames] == [
                ("voice.error", "state_unavailable", True)
            ]
            assert len(a.lines("shared store unavailable")) == 1
            assert len(b.lines("shared store unavailable")) == 1

            redis.start()

            async def both_recovered() -> bool:
                states = [(await r.ready())["store"]["state"] for r in (a, b)]
                return states == ["ok", "ok"]

            await until(both_recovered, "both replicas use Redis again")
            ticket = (await a.session(session_id="k10", mode="openai"))["relay"]["ticket"]
            assert (await relay_first_frame(b, ticket))["type"] == "agent.state"
            frames, code = await relay_close_code(a, ticket)
            assert code == 4403
            assert len(a.lines("shared store recovered")) == 1
            for replica in (a, b):
                log = b"".join(line for line in _all(replica.log))
                assert redis.url.encode() not in log


def _all(log: IO[bytes]) -> list[bytes]:
    log.seek(0)
    return log.read().splitlines()
