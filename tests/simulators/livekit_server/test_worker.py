"""A real livekit-agents worker (AgentServer, in a process of its own inside the test's
namespace) registers at `/agent`, gets the job a page token's RoomConfiguration dispatches,
joins with the token the stand-in minted; killed, it loses its job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from simulators.livekit_server import LiveKitServer

from .agent_worker import AGENT_NAME, HELLO_TOPIC
from .conftest import API_KEY, API_SECRET, ROOT, RtcParticipant, token, wait_until

pytestmark = pytest.mark.netns


@contextlib.asynccontextmanager
async def worker_process(server: LiveKitServer) -> AsyncIterator[asyncio.subprocess.Process]:
    """The worker and its job processes in one process group, so a test can kill them all
    as a crashed machine would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.simulators.livekit_server.agent_worker",
        server.ws_url,
        API_KEY,
        API_SECRET,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def our_dispatch_jobs(server: LiveKitServer, room: str) -> list[JobStatus]:
    found = server.rooms.rooms.get(room)
    if found is None:
        return []
    return [
        job.state.status
        for d in found.dispatches.values()
        if d.agent_name == AGENT_NAME
        for job in d.state.jobs
    ]


async def test_a_real_worker_gets_the_job_from_the_page_token(ns_server: LiveKitServer) -> None:
    config = RoomConfiguration(
        agents=[RoomAgentDispatch(agent_name=AGENT_NAME, metadata='{"session_id": "s1"}')]
    )
    async with worker_process(ns_server) as worker:
        await wait_until(
            lambda: any(w.agent_name == AGENT_NAME for w in ns_server.agents.workers.values()),
            within=30,
            what="the worker to register",
        )
        async with RtcParticipant.start(
            ns_server.ws_url, token("page", room="meeting_s1", config=config), "page"
        ) as page:
            hello = await page.wait_for("data", lambda e: e["topic"] == HELLO_TOPIC, within=30)
            body = json.loads(hello["payload"])
            assert body["metadata"] == '{"session_id": "s1"}'
            assert body["room"] == "meeting_s1"
            agent = ns_server.rooms.get("meeting_s1").participants[hello["participant"]]
            assert agent.grants.dependent and agent.attributes["lk.agent_name"] == AGENT_NAME
            await wait_until(
                lambda: our_dispatch_jobs(ns_server, "meeting_s1") == [JobStatus.JS_RUNNING],
                what="the job to run",
            )

            os.killpg(worker.pid, signal.SIGKILL)
            await wait_until(
                lambda: our_dispatch_jobs(ns_server, "meeting_s1") == [JobStatus.JS_FAILED],
                within=15,
                what="the job to be lost",
            )
            assert not ns_server.agents.workers
