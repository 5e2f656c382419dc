"""livekit mode end to end, as a meeting runs it: the page (in Chromium, or the Python rtc SDK
in its place) joins its room on the LiveKit stand-in with the token the gateway issued, the
agent is dispatched from that token to a real `voicegw agent` worker, hears the question
through the room, calls send_email through the n8n simulator and answers; the page plays the
answer and shows the `voice.state` messages.

One stand-in, gateway and worker serve the module; each test has a session (a room) of its
own and closes it when done. The stand-in freezes job states at assignment as the open-source
LiveKit server does: the harder case for the gateway's dispatch check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from livekit import api
from playwright.sync_api import Page

from gateway.dispatch import JOIN_GRACE_S
from tests.browser.conftest import PageLog, SpokenInput, speech_span_s, wait_for
from tests.netns import NetNamespace
from tests.stack import metric

from .room import (
    ANSWERED,
    EMAIL,
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    QUESTION,
    RoomStack,
    audible_seconds,
    is_subsequence,
    page_messages,
    room_stack,
    rtc_page,
    speak_when_the_agent_is_there,
    state_messages,
    wait_for_registered,
)

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.browser]

LOUD = 0.02 * 32767
STATES = ["initializing", "listening", "thinking", "speaking", "listening"]


@pytest.fixture(scope="module")
def meeting(netns: NetNamespace) -> Iterator[RoomStack]:
    with room_stack(netns, server_options={"track_job_status": False}) as stack:
        wait_for_registered(stack)
        yield stack


def agents_in(meeting: RoomStack, session_id: str) -> list[str]:
    room = meeting.room(session_id)
    assert room is not None
    return meeting.call(
        lambda: sorted(p.identity for p in room.participants.values() if p.grants.dependent)
    )


def created_dispatches(meeting: RoomStack) -> int:
    return meeting.call(
        lambda: [c.method for c in meeting.server.twirp.calls].count("CreateDispatch")
    )


def fallbacks(meeting: RoomStack) -> int:
    """Fallback reports the gateway has had (a page that outlives its test's room, closed
    at the end, may report one after it)."""
    return meeting.fallbacks_reported()


def emails_for(meeting: RoomStack, session_id: str) -> list[dict[str, Any]]:
    return meeting.call(
        lambda: [
            r.body
            for r in meeting.simulated.providers.n8n.received
            if r.body.get("session_id") == session_id
        ]
    )


def turn_over(messages: list[dict[str, Any]]) -> bool:
    states = [m["state"] for m in messages if m["type"] == "agent.state"]
    return is_subsequence(STATES, states) and any(m["type"] == "metrics.turn" for m in messages)


def check_the_conversation(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract's messages of one answered question, in order; returns metrics.turn."""
    states = [m["state"] for m in messages if m["type"] == "agent.state"]
    assert is_subsequence(STATES, states), states
    users = [m for m in messages if m["type"] == "transcript.user" and m["final"]]
    assert [m["text"] for m in users] == [QUESTION]
    answers = [m for m in messages if m["type"] == "transcript.assistant" and m["final"]]
    assert answers and answers[-1]["text"].startswith("(simulated) Done.")
    tools = [(m["type"], m["name"]) for m in messages if m["type"].startswith("tool.")]
    assert tools == [("tool.started", "send_email"), ("tool.finished", "send_email")]
    finished = next(m for m in messages if m["type"] == "tool.finished")
    assert finished["status"] == "ok"
    [turn] = [m for m in messages if m["type"] == "metrics.turn"]
    assert turn["voice_to_voice_ms"] is not None and turn["voice_to_voice_ms"] > 0
    return turn


def test_the_page_in_chromium_holds_a_conversation_through_the_room(
    meeting: RoomStack, page: Page, page_log: PageLog, question: SpokenInput
) -> None:
    streams, before = meeting.streams(), fallbacks(meeting)
    page.goto(meeting.launch("page1"))
    speak_when_the_agent_is_there(page, page_log)
    wait_for(page, ANSWERED, timeout_s=60, log=page_log)

    # The page joined its room with livekit-client over /rtc/v1, the agent came from the
    # dispatch in the page's token (the gateway's check found no room and made none).
    room = meeting.room("page1")
    assert room is not None
    assert meeting.call(lambda: room.participants["page-page1"].single_pc)
    metadata = meeting.token_dispatch("page1")
    assert (metadata.session_id, metadata.mode) == ("page1", "livekit")
    [agent] = agents_in(meeting, "page1")
    assert agent.startswith("agent-AJ_")
    assert created_dispatches(meeting) == 0

    # The simulated Deepgram heard the question: its speech lasts as long as the WAV's.
    heard = meeting.heard(streams)
    heard_s = speech_span_s(heard, meeting.deepgram_rate(streams))
    assert heard_s == pytest.approx(question.speech_s, rel=0.15), (heard_s, question.speech_s)

    # Every state message arrived on voice.state, and the page shows them.
    check_the_conversation(page_messages(page))
    lines = page.evaluate("window.voicePage.transcript")
    assert [(line["role"], line["final"]) for line in lines] == [
        ("user", True),
        ("assistant", True),
    ]
    assert lines[0]["text"] == QUESTION and lines[1]["text"].startswith("(simulated) Done.")
    shown = page.locator("#transcript").inner_text()
    assert QUESTION in shown and "(simulated) Done." in shown
    assert page.evaluate("document.getElementById('tool').textContent") == "Email sent"
    status = page.locator("#status-line").inner_text()
    assert "mode livekit" in status and "connected" in status
    assert "tool send_email ok (" in status and "last turn" in status
    assert page.evaluate("document.body.dataset.fallbackReason") == ""

    # The page played the answer (the simulated voice: a tone of ~55 ms per character).
    assert audible_seconds(page) > 1.0
    assert [e["to"] for e in emails_for(meeting, "page1")] == [EMAIL["to"]]
    assert fallbacks(meeting) == before
    meeting.close_room("page1")


def test_a_python_participant_holds_the_same_conversation(
    meeting: RoomStack, question: SpokenInput
) -> None:
    async def converse() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        async with rtc_page(meeting, "rtc1") as page:
            await page.wait_for("connected")
            await page.wait_for(
                "subscribed", lambda e: e["participant"].startswith("agent-"), within=30
            )
            await page.command("publish_wav", path=str(question.path))
            await page.wait_for(
                "data",
                lambda e: '"transcript.assistant"' in e["payload"]
                and '"(simulated) Done.' in e["payload"]
                and json.loads(e["payload"])["final"],
                within=60,
            )
            # ... the turn is over (its metrics.turn came) and the agent listens again.
            await page.wait_for("data", lambda e: turn_over(state_messages(page)), within=30)
            heard = await page.wait_for(
                "audio",
                lambda e: e["participant"].startswith("agent-") and e["audible"] > 48_000,
                within=30,
            )
            data = [e for e in page.events if e["event"] == "data"]
            return state_messages(page), data, heard

    messages, data, heard = meeting.run(converse(), timeout=150)
    check_the_conversation(messages)
    # Every message came from the agent, on the voice.state topic.
    assert {(e["participant"].startswith("agent-"), e["topic"]) for e in data} == {
        (True, "voice.state")
    }
    assert heard["peak"] > LOUD  # more than a second of the answer's audio, loud
    assert [e["to"] for e in emails_for(meeting, "rtc1")] == [EMAIL["to"]]
    meeting.close_room("rtc1")


def test_a_reloaded_page_keeps_its_agent_and_a_lost_agent_is_dispatched_again(
    meeting: RoomStack, page: Page, page_log: PageLog
) -> None:
    before = fallbacks(meeting)
    page.goto(meeting.launch("reload1"))
    speak_when_the_agent_is_there(page, page_log)
    wait_for(page, ANSWERED, timeout_s=60, log=page_log)
    [first_agent] = agents_in(meeting, "reload1")
    live = metric("voicegw_agent_dispatches_total", outcome="agent_live")
    created = metric("voicegw_agent_dispatches_total", outcome="created")

    # The page reloads into the still-open room: its agent stayed (a session outlives its
    # page leaving), the gateway's check sees it in the room, and the second conversation
    # works.
    page.reload()
    speak_when_the_agent_is_there(page, page_log)
    wait_for(page, ANSWERED, timeout_s=60, log=page_log)
    assert agents_in(meeting, "reload1") == [first_agent]
    assert metric("voicegw_agent_dispatches_total", outcome="agent_live") == live + 1
    assert created_dispatches(meeting) == 0

    # The agent is lost while the room stays open (removed through the server API; its job
    # ends). Its dispatch still says "running", as the open-source server never updates it,
    # and is older than the check's grace. The page reloads: the check sees no agent in the
    # room and dispatches one, and the third conversation works.
    room = meeting.room("reload1")
    assert room is not None
    meeting.wait(
        lambda: all(
            time.time() - job.state.started_at / 1e9 > JOIN_GRACE_S
            for d in room.dispatches.values()
            for job in d.state.jobs
        ),
        within=JOIN_GRACE_S + 5,
        what="the token's job to be older than the check's grace",
    )

    async def remove_agent() -> None:
        async with api.LiveKitAPI(
            meeting.server.url, LIVEKIT_KEY, LIVEKIT_SECRET, failover=False
        ) as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room="meeting_reload1", identity=first_agent)
            )

    meeting.run(remove_agent())
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)
    page.reload()
    speak_when_the_agent_is_there(page, page_log)
    wait_for(page, ANSWERED, timeout_s=60, log=page_log)
    [second_agent] = agents_in(meeting, "reload1")
    assert second_agent != first_agent
    assert created_dispatches(meeting) == 1
    assert metric("voicegw_agent_dispatches_total", outcome="created") == created + 1
    assert page.evaluate("document.body.dataset.mode") == "livekit"
    assert fallbacks(meeting) == before
    # Leaving the room on a reload is no failure of the page either.
    assert not [line for line in page_log.lines if "The page failed" in line], page_log
    meeting.close_room("reload1")
