"""The gateway's LiveKit server API calls, through livekit-api's LiveKitAPI against the LiveKit
stand-in: the dispatch check decided from the room's real state (participants a real signal
connection made, jobs a hand-driven worker took), on a server that keeps job states current
(LiveKit Cloud, `cloud`) and on one that freezes them at assignment (the open-source server,
`open-source`); and the active probe that feeds the breaker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from livekit.protocol.agent import Job, JobState, JobStatus
from livekit.protocol.agent_dispatch import AgentDispatch, AgentDispatchState, RoomAgentDispatch
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.room import RoomConfiguration

from gateway.breaker import BreakerRules
from gateway.dispatch import (
    JOIN_GRACE_S,
    LiveKitProber,
    LiveKitServerApi,
    agent_in_room,
    dispatch_is_pending,
)
from gateway.router import Router
from gateway.store import MemoryStore
from pipelines.contracts import DispatchMetadata
from pipelines.contracts.routing import RoutingPolicy
from simulators.livekit_server import LiveKitServer
from tests.simulators.livekit_server.conftest import FakeWorker, SignalClient, token
from tests.stack import SECRETS, FakeClock, gateway_env, metric, served_gateway

AGENT = "voice-agent"
KEY, SECRET = SECRETS["LIVEKIT_API_KEY"], SECRETS["LIVEKIT_API_SECRET"]
BOTH = pytest.mark.parametrize(
    "livekit_track_job_status", [True, False], ids=["cloud", "open-source"]
)


class WallClock:
    """Wall-clock seconds that start at now and move only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def checker(
    server: LiveKitServer, *, secret: str = SECRET, clock: WallClock | None = None
) -> LiveKitServerApi:
    return LiveKitServerApi(
        url=server.ws_url,
        api_key=KEY,
        api_secret=secret,
        agent_name=AGENT,
        clock=clock or WallClock(),
    )


def page_token(session_id: str) -> str:
    """A page's token as the gateway issues it: its room, our agent's dispatch in it."""
    config = RoomConfiguration(agents=[RoomAgentDispatch(agent_name=AGENT, metadata="token")])
    return token(
        f"page-{session_id}", room=f"meeting_{session_id}", config=config, key=KEY, secret=SECRET
    )


def methods(server: LiveKitServer) -> list[str]:
    return [call.method for call in server.twirp.calls]


@contextlib.asynccontextmanager
async def agent_joins(
    server: LiveKitServer, worker: FakeWorker, identity: str = "agent-1"
) -> AsyncIterator[SignalClient]:
    """The worker takes the next job offered and its agent joins the room with the token
    the server minted (as livekit-agents does), until the block ends."""
    request = (await worker.next("availability")).availability
    await worker.answer(request, available=True, identity=identity)
    assignment = (await worker.next("assignment")).assignment
    async with SignalClient.connect(server, assignment.token) as agent:
        await agent.next("join")
        yield agent


async def test_no_room_means_the_token_dispatch_will_do(livekit: LiveKitServer) -> None:
    assert await checker(livekit).ensure_agent(session_id="s1", user=None) == "no_room"
    assert methods(livekit) == ["ListRooms"]


@BOTH
async def test_an_agent_in_the_room_is_live(livekit: LiveKitServer) -> None:
    async with (
        FakeWorker.connect(livekit, key=KEY, secret=SECRET) as worker,
        SignalClient.connect(livekit, page_token("s2")) as page,
    ):
        await page.next("join")
        async with agent_joins(livekit, worker):
            outcome = await checker(livekit).ensure_agent(session_id="s2", user=None)
    assert outcome == "agent_live"
    assert methods(livekit) == ["ListRooms", "ListParticipants"]


@BOTH
async def test_an_agent_on_its_way_is_not_dispatched_twice(livekit: LiveKitServer) -> None:
    clock = WallClock()
    check = checker(livekit, clock=clock)
    async with (
        FakeWorker.connect(livekit, key=KEY, secret=SECRET) as worker,
        SignalClient.connect(livekit, page_token("s3")) as page,
    ):
        await page.next("join")
        request = (await worker.next("availability")).availability
        await worker.answer(request, available=True, identity="agent-1")
        await worker.next("assignment")
        # Assigned, not in the room yet (its job process is starting).
        assert await check.ensure_agent(session_id="s3", user=None) == "agent_pending"

        # Nobody came within the grace: a new dispatch, offered to the worker at once.
        clock.now += JOIN_GRACE_S + 1
        assert await check.ensure_agent(session_id="s3", user=None) == "created"
        await worker.next("availability")
        clock.now -= JOIN_GRACE_S + 1  # back to the server's time: the new one is on its way
        assert await check.ensure_agent(session_id="s3", user=None) == "agent_pending"
    assert methods(livekit).count("CreateDispatch") == 1


async def test_a_dispatch_no_worker_took_is_made_again_after_the_grace(
    livekit: LiveKitServer,
) -> None:
    clock = WallClock()
    check = checker(livekit, clock=clock)
    async with SignalClient.connect(livekit, page_token("s5")) as page:
        await page.next("join")
        # No worker: the token's dispatch has no job, and LiveKit may still assign one.
        assert await check.ensure_agent(session_id="s5", user=None) == "agent_pending"
        clock.now += JOIN_GRACE_S + 1
        assert await check.ensure_agent(session_id="s5", user=None) == "created"


@BOTH
async def test_an_agent_that_left_is_dispatched_again(
    livekit: LiveKitServer, livekit_track_job_status: bool
) -> None:
    created_before = metric("voicegw_agent_dispatches_total", outcome="created")
    clock = WallClock()
    check = checker(livekit, clock=clock)
    async with (
        FakeWorker.connect(livekit, key=KEY, secret=SECRET) as worker,
        SignalClient.connect(livekit, page_token("s4")) as page,
    ):
        await page.next("join")
        async with agent_joins(livekit, worker):
            assert await check.ensure_agent(session_id="s4", user="ann@example.com") == (
                "agent_live"
            )
        await worker.next("termination")  # the agent left the room: its job is over

        outcome = await check.ensure_agent(session_id="s4", user="ann@example.com")
        if livekit_track_job_status:
            assert outcome == "created"  # the job says it ended
        else:
            # The open-source server still shows the job running: only time tells.
            assert outcome == "agent_pending"
            clock.now += JOIN_GRACE_S + 1
            assert await check.ensure_agent(session_id="s4", user="ann@example.com") == "created"
        [request] = [c.request for c in livekit.twirp.calls if c.method == "CreateDispatch"]
        metadata = DispatchMetadata.model_validate_json(request.metadata)  # type: ignore[attr-defined]
        assert (metadata.session_id, metadata.mode, metadata.user) == (
            "s4",
            "livekit",
            "ann@example.com",
        )
        # The worker gets the new job and its agent joins: live again.
        async with agent_joins(livekit, worker, identity="agent-2"):
            assert await check.ensure_agent(session_id="s4", user=None) == "agent_live"
    assert metric("voicegw_agent_dispatches_total", outcome="created") == created_before + 1


async def test_a_refused_or_failed_check_is_an_error_outcome_not_a_crash(
    livekit: LiveKitServer,
) -> None:
    async with SignalClient.connect(livekit, page_token("s6")) as page:
        await page.next("join")
        wrong = checker(livekit, secret="wrong-secret-" * 3)
        assert await wrong.ensure_agent(session_id="s6", user=None) == "error"
    assert livekit.twirp.calls == []  # refused before any method ran
    gone = LiveKitServerApi(
        url="ws://127.0.0.1:9", api_key=KEY, api_secret=SECRET, agent_name=AGENT
    )
    assert await gone.ensure_agent(session_id="s6", user=None) == "error"


def test_which_participants_are_our_agent() -> None:
    def participant(
        kind: ParticipantInfo.Kind,
        attributes: dict[str, str],
        state: ParticipantInfo.State = ParticipantInfo.State.ACTIVE,
    ) -> ParticipantInfo:
        return ParticipantInfo(identity="x", kind=kind, attributes=attributes, state=state)

    agent = ParticipantInfo.Kind.AGENT
    assert agent_in_room([participant(agent, {"lk.agent_name": AGENT})], AGENT)  # the server's
    assert agent_in_room([participant(agent, {"lk.agent.name": AGENT})], AGENT)  # the SDK's
    assert not agent_in_room([participant(agent, {"lk.agent_name": "other"})], AGENT)
    assert not agent_in_room(
        [participant(ParticipantInfo.Kind.STANDARD, {"lk.agent_name": AGENT})], AGENT
    )
    assert not agent_in_room(
        [participant(agent, {"lk.agent_name": AGENT}, ParticipantInfo.State.DISCONNECTED)], AGENT
    )
    assert not agent_in_room([], AGENT)


def test_which_dispatches_are_pending() -> None:
    now = 1_000_000.0

    def dispatch(
        *jobs: tuple[JobStatus, float],
        age_s: float = 1.0,
        agent: str = AGENT,
        deleted: bool = False,
    ) -> AgentDispatch:
        state = AgentDispatchState(
            created_at=int((now - age_s) * 1e9),
            deleted_at=1 if deleted else 0,
            jobs=[
                Job(state=JobState(status=status, started_at=int((now - ago) * 1e9)))
                for status, ago in jobs
            ],
        )
        return AgentDispatch(agent_name=agent, state=state)

    def pending(d: AgentDispatch) -> bool:
        return dispatch_is_pending(d, AGENT, now_s=now, grace_s=10)

    assert pending(dispatch())  # no job yet: LiveKit is assigning one
    assert pending(dispatch((JobStatus.JS_RUNNING, 2)))  # assigned, its agent on its way
    assert pending(dispatch((JobStatus.JS_RUNNING, 2), age_s=60))  # a newer job counts
    assert not pending(dispatch(age_s=10))  # nobody took it in time
    assert not pending(dispatch((JobStatus.JS_RUNNING, 30), age_s=30))  # frozen or stuck
    assert not pending(dispatch((JobStatus.JS_FAILED, 2)))  # ended, as Cloud says
    assert not pending(dispatch((JobStatus.JS_SUCCESS, 2)))
    assert not pending(dispatch(agent="another-agent"))
    assert not pending(dispatch(deleted=True))


async def test_the_gateway_checks_when_it_issues_a_livekit_session(
    livekit: LiveKitServer,
) -> None:
    env = gateway_env(LIVEKIT_URL=livekit.ws_url, LIVEKIT_DISPATCH_CHECK="true")
    params = {"session_id": "rj1", "mode": "livekit"}
    async with (
        served_gateway(env) as gw,
        FakeWorker.connect(livekit, key=KEY, secret=SECRET) as worker,
    ):
        first = await gw.client.get("/v1/session", params=params)
        assert first.status_code == 200 and first.json()["mode"] == "livekit"
        assert methods(livekit) == ["ListRooms"]  # no room yet: the token dispatches

        # The page joins with the token it got; the token's dispatch brings the agent.
        async with SignalClient.connect(livekit, first.json()["livekit"]["token"]) as page:
            await page.next("join")
            async with agent_joins(livekit, worker):
                # A second page of the session (or a reload) while the agent is there.
                again = await gw.client.get("/v1/session", params=params)
                assert again.json()["mode"] == "livekit"
                assert "CreateDispatch" not in methods(livekit)
            await worker.next("termination")
            # The agent is gone; the page reloads into the open room: a new agent comes.
            reload = await gw.client.get("/v1/session", params=params)
            assert reload.json()["mode"] == "livekit"
            [request] = [c.request for c in livekit.twirp.calls if c.method == "CreateDispatch"]
            assert request.room == "meeting_rj1"  # type: ignore[attr-defined]
            await worker.next("availability")

        # openai sessions never ask LiveKit.
        calls = len(livekit.twirp.calls)
        await gw.client.get("/v1/session", params={"session_id": "rj2", "mode": "openai"})
        assert len(livekit.twirp.calls) == calls

    # LiveKit down: the session is still issued (its token carries a dispatch).
    errors = metric("voicegw_agent_dispatches_total", outcome="error")
    async with served_gateway(gateway_env(LIVEKIT_DISPATCH_CHECK="true")) as gw:
        down = await gw.client.get("/v1/session", params={"session_id": "rj3", "mode": "livekit"})
    assert down.status_code == 200 and down.json()["mode"] == "livekit"
    assert metric("voicegw_agent_dispatches_total", outcome="error") == errors + 1


async def test_dispatch_check_is_off_in_dev_unless_asked(livekit: LiveKitServer) -> None:
    env = gateway_env(LIVEKIT_URL=livekit.ws_url)
    del env["LIVEKIT_DISPATCH_CHECK"]
    async with served_gateway(env) as gw:
        assert gw.gateway.dispatch_check is False
        await gw.client.get("/v1/session", params={"session_id": "d1", "mode": "livekit"})
    assert livekit.twirp.calls == []


async def test_active_probe_failures_open_the_breaker(clock: FakeClock) -> None:
    rules = BreakerRules(threshold=3, window_s=60, cooldown_s=30, probe_window_s=20)
    router = Router(RoutingPolicy(), rules, MemoryStore(), clock=clock)
    stand_in = LiveKitServer({KEY: SECRET})
    sleeps: list[float] = []
    stop = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 4:
            stop.set()
            await asyncio.Event().wait()  # park here until cancelled

    async with stand_in.serve():
        prober = LiveKitProber(
            checker(stand_in), router.probe_failed, interval_s=15, sleep=fake_sleep
        )
        assert await prober.probe_once() is True
        assert [c.method for c in stand_in.twirp.calls] == ["ListRooms"]
    assert (await router.breaker()).state == "closed"
    # The server is gone: every probe fails.
    task = asyncio.create_task(prober.run())
    await stop.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleeps == [15, 15, 15, 15]
    assert prober.failures == 4
    assert (await router.breaker()).state == "open"
    assert prober.last_ok is False
