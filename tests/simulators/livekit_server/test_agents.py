"""Agent dispatch at `/agent` with workers that answer by hand: registration, assignment with
a BuildAgentToken-style token, spread by load, declines and departures, job state."""

from __future__ import annotations

import pytest
from livekit import api
from livekit.protocol.agent import JobStatus, JobType, UpdateJobStatus, WorkerMessage, WorkerStatus
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from simulators.livekit_server import LiveKitServer
from simulators.livekit_server.auth import KeyRing

from .conftest import API_KEY, API_SECRET, KEYS, FakeWorker, SignalClient, token, wait_until

AGENT = "voice-agent"
DISPATCH = RoomConfiguration(agents=[RoomAgentDispatch(agent_name=AGENT, metadata="meta")])


async def test_a_worker_needs_the_agent_grant(server: LiveKitServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"{server.ws_url}/agent", additional_headers={"Authorization": f"Bearer {token('x')}"}
        ):
            pass
    assert refused.value.response.status_code == 401


async def test_a_job_from_the_tokens_room_configuration(server: LiveKitServer) -> None:
    async with FakeWorker.connect(server) as worker:
        assert worker.id.startswith("AW_")
        async with SignalClient.connect(server, token("page", config=DISPATCH)) as page:
            await page.next("join")
            request = (await worker.next("availability")).availability
            job = request.job
            assert (job.type, job.agent_name, job.metadata) == (JobType.JT_ROOM, AGENT, "meta")
            assert job.room.name == "room-1" and job.id.startswith("AJ_")
            assert job.dispatch_id in server.rooms.get("room-1").dispatches
            await worker.answer(request, available=True, identity="agent-1")
            assignment = (await worker.next("assignment")).assignment
            assert assignment.job.id == job.id and assignment.url == ""

            claims = KeyRing(KEYS).verify(assignment.token).claims
            assert claims.identity == "agent-1" and claims.kind == "agent"
            assert claims.video is not None
            assert (claims.video.room, claims.video.room_join, claims.video.agent) == (
                "room-1",
                True,
                True,
            )
            assert claims.attributes == {"lk.agent_name": AGENT}

            # The agent joins with that token; its job runs; it leaves: the job is ended.
            async with SignalClient.connect(server, assignment.token) as agent:
                joined = (await agent.next("join")).join
                assert joined.participant.kind == joined.participant.Kind.AGENT
                await worker.send(
                    WorkerMessage(
                        update_job=UpdateJobStatus(job_id=job.id, status=JobStatus.JS_RUNNING)
                    )
                )
            termination = (await worker.next("termination")).termination
            assert termination.job_id == job.id
            [dispatch] = [
                d for d in server.rooms.get("room-1").dispatches.values() if d.agent_name == AGENT
            ]
            [recorded] = dispatch.state.jobs
            assert recorded.state.status == JobStatus.JS_FAILED
            assert recorded.state.error == "agent worker left the room"


async def test_jobs_only_when_the_join_creates_the_room(server: LiveKitServer) -> None:
    async with FakeWorker.connect(server) as worker:
        async with SignalClient.connect(server, token("page", config=DISPATCH)) as page:
            await page.next("join")
            first = (await worker.next("availability")).availability
            await worker.answer(first, available=True, identity="agent-1")
            await worker.next("assignment")
            async with SignalClient.connect(server, token("page-2", config=DISPATCH)) as again:
                await again.next("join")
                room = server.rooms.get("room-1")
                assert [d.agent_name for d in room.dispatches.values()] == [AGENT]
                assert worker.messages.empty()


async def test_a_closing_room_terminates_its_jobs(server: LiveKitServer) -> None:
    async with FakeWorker.connect(server) as worker:
        async with SignalClient.connect(server, token("page", config=DISPATCH)) as page:
            await page.next("join")
            request = (await worker.next("availability")).availability
            await worker.answer(request, available=True, identity="agent-1")
            await worker.next("assignment")
            async with api.LiveKitAPI(server.ws_url, API_KEY, API_SECRET) as lk:
                await lk.room.delete_room(api.DeleteRoomRequest(room="room-1"))
            termination = (await worker.next("termination")).termination
            assert termination.job_id == request.job.id


async def test_load_decides_which_worker_gets_the_job(server: LiveKitServer) -> None:
    async with FakeWorker.connect(server) as busy, FakeWorker.connect(server) as idle:
        await busy.report(load=1.0)  # available, but no capacity left: weight 0
        await idle.report(load=0.1)
        await wait_until(lambda: server.agents.workers[busy.id].load == 1.0)
        for n in range(4):
            async with SignalClient.connect(server, token("p", room=f"r{n}", config=DISPATCH)):
                request = (await idle.next("availability")).availability
                await idle.answer(request, available=True, identity=f"agent-{n}")
        assert busy.messages.empty()

        # A worker that reports itself full is skipped whatever its load.
        await busy.report(load=0.0)
        await idle.report(load=0.0, status=WorkerStatus.WS_FULL)
        await wait_until(lambda: server.agents.workers[idle.id].status == WorkerStatus.WS_FULL)
        async with SignalClient.connect(server, token("p", room="r9", config=DISPATCH)):
            request = (await busy.next("availability")).availability
            assert request.job.room.name == "r9"


async def test_equal_workers_share_the_jobs(server: LiveKitServer) -> None:
    async with FakeWorker.connect(server) as one, FakeWorker.connect(server) as two:
        for n in range(12):
            async with SignalClient.connect(server, token("p", room=f"s{n}", config=DISPATCH)):
                asked = n + 1
                await wait_until(
                    lambda: one.messages.qsize() + two.messages.qsize() >= asked,  # noqa: B023
                    what="a job request",
                )
        # Weighted random with the test's seeded generator: both got some (not a fixed split).
        assert one.messages.qsize() > 0 and two.messages.qsize() > 0


async def test_a_decline_or_a_departure_moves_the_job_to_another_worker(
    server: LiveKitServer,
) -> None:
    async with FakeWorker.connect(server) as first, FakeWorker.connect(server) as second:
        async with SignalClient.connect(server, token("p", config=DISPATCH)):
            await wait_until(lambda: first.messages.qsize() + second.messages.qsize() == 1)
            asked, other = (first, second) if first.messages.qsize() else (second, first)
            request = (await asked.next("availability")).availability
            await asked.answer(request, available=False, identity="")
            retried = (await other.next("availability")).availability
            assert retried.job.id == request.job.id
            await other.answer(retried, available=True, identity="agent-1")
            await other.next("assignment")

        async with SignalClient.connect(server, token("p", room="r2", config=DISPATCH)):
            await wait_until(lambda: first.messages.qsize() + second.messages.qsize() == 1)
            asked, other = (first, second) if first.messages.qsize() else (second, first)
            await asked.next("availability")
            await asked.ws.close()  # gone before it answered
            moved = (await other.next("availability")).availability
            assert moved.job.room.name == "r2"


async def test_a_worker_that_disconnects_loses_its_jobs(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("page", config=DISPATCH)) as page:
        await page.next("join")  # no worker yet: the dispatch stays without a job
        room = server.rooms.get("room-1")
        [dispatch] = [d for d in room.dispatches.values() if d.agent_name == AGENT]
        assert list(dispatch.state.jobs) == []
    async with FakeWorker.connect(server) as worker:
        async with SignalClient.connect(server, token("page", room="r2", config=DISPATCH)):
            request = (await worker.next("availability")).availability
            await worker.answer(request, available=True, identity="agent-1")
            await worker.next("assignment")
            await worker.ws.close()
            await wait_until(lambda: worker.id not in server.agents.workers)
            [dispatch] = [
                d for d in server.rooms.get("r2").dispatches.values() if d.agent_name == AGENT
            ]
            [job] = dispatch.state.jobs
            assert (job.state.status, job.state.error) == (
                JobStatus.JS_FAILED,
                "worker disconnected",
            )


async def test_open_source_mode_freezes_the_job_state() -> None:
    import random

    frozen = LiveKitServer(KEYS, track_job_status=False, rng=random.Random(1))
    async with frozen.serve(), FakeWorker.connect(frozen) as worker:
        async with SignalClient.connect(frozen, token("page", config=DISPATCH)):
            request = (await worker.next("availability")).availability
            await worker.answer(request, available=True, identity="agent-1")
            await worker.next("assignment")
            await worker.send(
                WorkerMessage(
                    update_job=UpdateJobStatus(job_id=request.job.id, status=JobStatus.JS_SUCCESS)
                )
            )
            await worker.send(WorkerMessage(ping=WorkerMessage().ping))
            await worker.next("pong")
            [dispatch] = [
                d for d in frozen.rooms.get("room-1").dispatches.values() if d.agent_name == AGENT
            ]
            assert dispatch.state.jobs[0].state.status == JobStatus.JS_RUNNING


async def test_a_worker_that_says_something_unknown_is_disconnected(
    server: LiveKitServer,
) -> None:
    async with FakeWorker.connect(server) as worker:
        await worker.send(WorkerMessage())
        await wait_until(lambda: worker.id not in server.agents.workers)
        await wait_until(lambda: worker.ws.close_code is not None, what="the socket closed")
