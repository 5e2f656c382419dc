"""Several `voicegw agent start` workers share the rooms through LiveKit's dispatch: each tells
the stand-in the share of its capacity it holds (AGENT_MAX_SESSIONS=2 here), the stand-in
stops offering work to a full one, and a worker that dies leaves the work to the others.

Four sessions of Python rtc participants (one Chromium each would not fit 2 cores), started one
after another as soon as the previous one has its agent, all held open until each is answered.
Two workers of capacity two is the smallest set-up in which both must fill up; six sessions at
three each left a 2-core machine no headroom (a CI run's participant lost its connection).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit.protocol.agent import WorkerStatus

from tests.browser.conftest import SpokenInput
from tests.netns import NetNamespace
from tests.simulators.livekit_server.conftest import RtcParticipant

from .room import RoomStack, room_stack, rtc_page, wait_for_registered

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

CAPACITY = 2


@pytest.fixture(scope="module")
def meeting(netns: NetNamespace) -> Iterator[RoomStack]:
    with room_stack(
        netns,
        env={"AGENT_MAX_SESSIONS": str(CAPACITY)},
        workers=2,
        agent_mode="start",
        restart=False,  # a killed worker stays dead: the test is about the other one
    ) as stack:
        wait_for_registered(stack, 2)
        yield stack


def job_workers(meeting: RoomStack, sessions: list[str]) -> dict[str, str]:
    """Which worker holds each session's job (the stand-in's view)."""

    def read() -> dict[str, str]:
        found = {}
        for session_id in sessions:
            room = meeting.server.rooms.rooms[f"meeting_{session_id}"]
            [dispatch] = [d for d in room.dispatches.values() if d.agent_name == "voice-agent"]
            found[session_id] = dispatch.state.jobs[-1].state.worker_id
        return found

    return meeting.call(read)


async def converse_in_turn(
    meeting: RoomStack, sessions: list[str], question: Path
) -> list[dict[str, object]]:
    """One page per session, each started once the previous one has its agent, all held
    open until every one is answered; returns each page's final answer."""
    async with contextlib.AsyncExitStack() as held:
        pages: list[RtcParticipant] = []
        for session_id in sessions:
            page = await held.enter_async_context(rtc_page(meeting, session_id))
            await page.wait_for(
                "subscribed", lambda e: e["participant"].startswith("agent-"), within=60
            )
            await page.command("publish_wav", path=str(question))
            pages.append(page)
        answers = []
        for page in pages:
            answer = await page.wait_for(
                "data",
                lambda e: '"(simulated) Done.' in e["payload"]
                and json.loads(e["payload"])["final"],
                within=90,
            )
            await page.wait_for(
                "audio",
                lambda e: e["participant"].startswith("agent-") and e["audible"] > 24_000,
                within=30,
            )
            answers.append(json.loads(answer["payload"]))
        return answers


def test_four_sessions_spread_over_two_workers_and_each_is_answered(
    meeting: RoomStack, question: SpokenInput
) -> None:
    sessions = [f"many{n}" for n in range(2 * CAPACITY)]
    answers = meeting.run(converse_in_turn(meeting, sessions, question.path), timeout=400)
    assert len(answers) == 2 * CAPACITY
    assert all(a["type"] == "transcript.assistant" for a in answers)

    # Full at capacity: each worker holds exactly its capacity, says so, and gets no more.
    held = Counter(job_workers(meeting, sessions).values())
    assert sorted(held.values()) == [CAPACITY, CAPACITY], held
    meeting.wait(
        lambda: all(
            w.load == 1.0 and w.status == WorkerStatus.WS_FULL
            for w in meeting.server.agents.workers.values()
        ),
        within=10,
        what="both workers to report themselves full",
    )
    for session_id in sessions:
        meeting.close_room(session_id)
    meeting.wait(
        lambda: all(
            w.load == 0.0 and w.status == WorkerStatus.WS_AVAILABLE
            for w in meeting.server.agents.workers.values()
        ),
        within=15,
        what="both workers to report themselves idle",
    )


def test_a_worker_killed_while_idle_leaves_new_sessions_to_the_other(
    meeting: RoomStack, question: SpokenInput
) -> None:
    first, second = meeting.livekit.workers
    survivor_ids = meeting.call(lambda: set(meeting.server.agents.workers))
    assert first.pid is not None
    os.killpg(first.pid, signal.SIGKILL)
    meeting.wait(
        lambda: len(meeting.server.agents.workers) == 1, within=15, what="the worker to go"
    )
    [survivor] = meeting.call(lambda: list(meeting.server.agents.workers))
    assert survivor in survivor_ids

    sessions = ["after0", "after1"]
    answers = meeting.run(converse_in_turn(meeting, sessions, question.path), timeout=200)
    assert len(answers) == 2
    assert set(job_workers(meeting, sessions).values()) == {survivor}
    for session_id in sessions:
        meeting.close_room(session_id)
    assert second.pid is not None  # the other worker is still running
