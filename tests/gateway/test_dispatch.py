"""The gateway's LiveKit server API calls, through livekit-api's LiveKitAPI against the Twirp
simulator: agent dispatch on re-join, and the active probe that feeds the breaker."""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import AgentDispatch, AgentDispatchState

from gateway.breaker import BreakerRules
from gateway.dispatch import LiveKitProber, LiveKitServerApi, dispatch_is_live
from gateway.router import Router
from gateway.store import MemoryStore
from pipelines.contracts import DispatchMetadata
from pipelines.contracts.routing import RoutingPolicy
from simulators.livekit_api import LiveKitApiSimulator
from simulators.server import RunningServer
from tests.stack import SECRETS, FakeClock, gateway_env, metric, served_gateway

AGENT = "voice-agent"


def server_api(
    server: RunningServer, secret: str = SECRETS["LIVEKIT_API_SECRET"]
) -> LiveKitServerApi:
    return LiveKitServerApi(
        url=server.ws_url,
        api_key=SECRETS["LIVEKIT_API_KEY"],
        api_secret=secret,
        agent_name=AGENT,
    )


async def test_no_room_means_the_token_dispatch_will_do(
    livekit: LiveKitApiSimulator, livekit_server: RunningServer
) -> None:
    outcome = await server_api(livekit_server).ensure_agent(session_id="s1", user=None)
    assert outcome == "no_room"
    assert [c.method for c in livekit.calls] == ["ListRooms"]
    assert livekit.rejected == []


async def test_existing_room_with_a_live_agent_gets_no_second_one(
    livekit: LiveKitApiSimulator, livekit_server: RunningServer
) -> None:
    livekit.add_room("meeting_s2")
    livekit.add_dispatch("meeting_s2", AGENT, job_status=JobStatus.JS_RUNNING)
    outcome = await server_api(livekit_server).ensure_agent(session_id="s2", user=None)
    assert outcome == "agent_live"
    assert livekit.created() == []


async def test_existing_room_whose_agent_left_gets_a_new_dispatch(
    livekit: LiveKitApiSimulator, livekit_server: RunningServer
) -> None:
    created_before = metric("voicegw_agent_dispatches_total", outcome="created")
    livekit.add_room("meeting_s3")
    livekit.add_dispatch("meeting_s3", AGENT, job_status=JobStatus.JS_SUCCESS)
    livekit.add_dispatch("meeting_s3", "another-agent", job_status=JobStatus.JS_RUNNING)
    outcome = await server_api(livekit_server).ensure_agent(session_id="s3", user="ann@example.com")
    assert outcome == "created"
    [request] = livekit.created()
    assert (request.agent_name, request.room) == (AGENT, "meeting_s3")
    metadata = DispatchMetadata.model_validate_json(request.metadata)
    assert (metadata.session_id, metadata.mode, metadata.user) == (
        "s3",
        "livekit",
        "ann@example.com",
    )
    assert [c.method for c in livekit.calls] == ["ListRooms", "ListDispatch", "CreateDispatch"]
    assert metric("voicegw_agent_dispatches_total", outcome="created") == created_before + 1

    # Asked again (another reload), the dispatch just created counts as live.
    assert await server_api(livekit_server).ensure_agent(session_id="s3", user=None) == (
        "agent_live"
    )


async def test_a_refused_check_is_an_error_outcome_not_a_crash(
    livekit: LiveKitApiSimulator, livekit_server: RunningServer
) -> None:
    livekit.add_room("meeting_s4")
    outcome = await server_api(livekit_server, secret="wrong-secret-" * 3).ensure_agent(
        session_id="s4", user=None
    )
    assert outcome == "error"
    assert livekit.rejected == ["unauthenticated: invalid access token"]
    livekit.down = True
    assert await server_api(livekit_server).ensure_agent(session_id="s4", user=None) == "error"
    assert livekit.created() == []


def test_which_dispatches_are_live() -> None:
    def dispatch(agent: str, *statuses: JobStatus, deleted: bool = False) -> AgentDispatch:
        from livekit.protocol.agent import Job, JobState

        jobs = [Job(state=JobState(status=s)) for s in statuses]
        state = AgentDispatchState(jobs=jobs, deleted_at=1 if deleted else 0)
        return AgentDispatch(agent_name=agent, state=state)

    assert dispatch_is_live(dispatch(AGENT), AGENT)  # no job yet: LiveKit is assigning one
    assert dispatch_is_live(dispatch(AGENT, JobStatus.JS_PENDING), AGENT)
    assert dispatch_is_live(dispatch(AGENT, JobStatus.JS_FAILED, JobStatus.JS_RUNNING), AGENT)
    assert not dispatch_is_live(dispatch(AGENT, JobStatus.JS_FAILED), AGENT)
    assert not dispatch_is_live(dispatch(AGENT, JobStatus.JS_CANCELLED), AGENT)
    assert not dispatch_is_live(dispatch("other", JobStatus.JS_RUNNING), AGENT)
    assert not dispatch_is_live(dispatch(AGENT, JobStatus.JS_RUNNING, deleted=True), AGENT)


async def test_gateway_redispatches_when_a_page_rejoins(
    livekit: LiveKitApiSimulator, livekit_server: RunningServer
) -> None:
    env = gateway_env(LIVEKIT_URL=livekit_server.ws_url, LIVEKIT_DISPATCH_CHECK="true")
    async with served_gateway(env) as gw:
        params = {"session_id": "rj1", "mode": "livekit"}
        first = await gw.client.get("/v1/session", params=params)
        assert first.status_code == 200 and first.json()["mode"] == "livekit"
        assert livekit.created() == []  # new room: the token's own dispatch applies

        # The page joined (the room exists), the agent's job ended, the page reloads.
        livekit.add_room("meeting_rj1")
        livekit.add_dispatch("meeting_rj1", AGENT, job_status=JobStatus.JS_SUCCESS)
        again = await gw.client.get("/v1/session", params=params)
        assert again.status_code == 200 and again.json()["mode"] == "livekit"
        [request] = livekit.created()
        assert request.room == "meeting_rj1"

        # openai sessions never ask LiveKit.
        calls = len(livekit.calls)
        await gw.client.get("/v1/session", params={"session_id": "rj2", "mode": "openai"})
        assert len(livekit.calls) == calls

        # LiveKit down: the session is still issued (its token carries a dispatch).
        livekit.down = True
        down = await gw.client.get("/v1/session", params={"session_id": "rj3", "mode": "livekit"})
        assert down.status_code == 200 and down.json()["mode"] == "livekit"


async def test_dispatch_check_is_off_in_dev_unless_asked(
    livekit: LiveKitApiSimulator, livekit_server: RunningServer
) -> None:
    env = gateway_env(LIVEKIT_URL=livekit_server.ws_url)
    del env["LIVEKIT_DISPATCH_CHECK"]
    async with served_gateway(env) as gw:
        assert gw.gateway.dispatch_check is False
        await gw.client.get("/v1/session", params={"session_id": "d1", "mode": "livekit"})
    assert livekit.calls == []


async def test_active_probe_failures_open_the_breaker(
    clock: FakeClock, livekit: LiveKitApiSimulator, livekit_server: RunningServer
) -> None:
    rules = BreakerRules(threshold=3, window_s=60, cooldown_s=30, probe_window_s=20)
    router = Router(RoutingPolicy(), rules, MemoryStore(), clock=clock)
    server_api = LiveKitServerApi(
        url=livekit_server.ws_url,
        api_key=SECRETS["LIVEKIT_API_KEY"],
        api_secret=SECRETS["LIVEKIT_API_SECRET"],
        agent_name="voice-agent",
    )
    sleeps: list[float] = []
    stop = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 4:
            stop.set()
            await asyncio.Event().wait()  # park here until cancelled

    prober = LiveKitProber(server_api, router.probe_failed, interval_s=15, sleep=fake_sleep)
    assert await prober.probe_once() is True
    assert (await router.breaker()).state == "closed"
    livekit.down = True
    task = asyncio.create_task(prober.run())
    await stop.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleeps == [15, 15, 15, 15]
    assert prober.failures == 4
    assert (await router.breaker()).state == "open"
    assert prober.last_ok is False
