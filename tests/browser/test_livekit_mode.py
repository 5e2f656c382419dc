"""livekit mode of the meeting page, with the real livekit-client (the vendored build) in the
room of the LiveKit stand-in, and the agent's part played by the test: a Python rtc
participant that joins with an agent token, plays a tone, sends `voice.state` data messages,
leaves, or sees its room deleted. Everything else is real: the gateway's livekit session
(token, room, URL), the fallback report and the openai session that follows it through the
relay to the simulator. Chromium, the stand-in and the participant share a network namespace
of the module's own (WebRTC ignores loopback; `tests/netns.py`).

These cases once ran against a stand-in of livekit-client's `Room` (fake_livekit_client.mjs);
the real client reaches them now. LiveKit being unreachable is in test_meeting_page.py; a
conversation with a real agent worker is in tests/e2e.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from livekit import api
from playwright.sync_api import Browser, Page, Playwright, Request

from simulators.openai_realtime import Say
from tests.e2e.room import LIVEKIT_KEY, LIVEKIT_SECRET, RoomStack, room_stack
from tests.netns import NetNamespace, netns  # noqa: F401 - fixture
from tests.simulators.livekit_server.conftest import RtcParticipant, token

from .conftest import CHROMIUM, CHROMIUM_FLAGS, PageLog, SpokenInput, save_screenshot, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.netns]

REPLY = "(simulated) Here is the plan for the rest of the meeting."
OPENAI_ANSWERED = (
    f"window.voicePage.transcript.some(l => l.role === 'assistant' && l.final"
    f" && l.text === {Say().text!r}) && document.body.dataset.state === 'listening'"
)
# Keeps what the page asks of getUserMedia (its microphone constraints).
RECORD_CONSTRAINTS = """
const devices = navigator.mediaDevices;
const getUserMedia = devices.getUserMedia.bind(devices);
window.microphoneRequests = [];
devices.getUserMedia = (constraints) => {
  window.microphoneRequests.push(constraints);
  return getUserMedia(constraints);
};
"""


@pytest.fixture(scope="module")
def meeting(netns: NetNamespace) -> Iterator[RoomStack]:  # noqa: F811
    """The gateway and the stand-in, with no agent worker: the test plays the agent."""
    # Each test reports a fallback; the breaker is not what they are about.
    with room_stack(netns, workers=0, env={"BREAKER_FAILURE_THRESHOLD": "1000"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright,
    spoken_input: SpokenInput,
    netns: NetNamespace,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Browser]:
    """Chromium born in the module's namespace; its microphone plays the utterance."""
    wrapper = netns.wrapper_script(tmp_path_factory.mktemp("chromium"), str(CHROMIUM))
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={spoken_input.path}%noloop"]
    browser = playwright.chromium.launch(executable_path=str(wrapper), args=flags)
    yield browser
    browser.close()


@contextlib.asynccontextmanager
async def agent(meeting: RoomStack, session_id: str) -> AsyncIterator[RtcParticipant]:
    """The agent's part: a participant of kind agent in the session's room."""
    jwt = token(
        "agent-AJ_test",
        room=f"meeting_{session_id}",
        kind="agent",
        key=LIVEKIT_KEY,
        secret=LIVEKIT_SECRET,
    )
    async with RtcParticipant.start(meeting.server.ws_url, jwt, "agent-AJ_test") as participant:
        await participant.wait_for("connected")
        yield participant


class Agent:
    """An agent participant held open on the servers' loop while a sync test drives it."""

    def __init__(self, meeting: RoomStack, session_id: str) -> None:
        self._meeting = meeting
        self._context = agent(meeting, session_id)
        self.participant: RtcParticipant = meeting.run(self._context.__aenter__())

    def command(self, cmd: str, **fields: Any) -> None:
        self._meeting.run(self.participant.command(cmd, **fields))

    def send(self, message: dict[str, Any], topic: str = "voice.state") -> None:
        sent = sum(e["event"] == "sent" for e in self.participant.events)
        self.command("send_data", payload=json.dumps(message), topic=topic)
        self._meeting.run(
            self.participant.wait_for(
                "sent",
                lambda e: sum(x["event"] == "sent" for x in self.participant.events) > sent,
            )
        )

    def leave(self) -> None:
        self._meeting.run(self._context.__aexit__(None, None, None))


@pytest.fixture
def agents(meeting: RoomStack) -> Iterator[list[Agent]]:
    """Agents a test starts; whatever is left of them goes when it ends."""
    started: list[Agent] = []
    yield started
    for each in started:
        if each.participant.process.returncode is None:
            each.leave()


def record_fallbacks(page: Page) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if urlsplit(request.url).path == "/v1/session/fallback":
            reports.append(json.loads(request.post_data or "{}"))

    page.on("request", on_request)
    return reports


def body_data(page: Page) -> dict[str, str]:
    data: dict[str, str] = page.evaluate("({...document.body.dataset})")
    return data


def fallbacks(meeting: RoomStack) -> int:
    return meeting.fallbacks_reported()


def participants(meeting: RoomStack, session_id: str) -> dict[str, list[str]]:
    """Who is in the session's room, and the sids of the tracks each publishes (read on the
    servers' thread: inside `meeting.wait` or `meeting.call`)."""
    room = meeting.server.rooms.rooms.get(f"meeting_{session_id}")
    if room is None:
        return {}
    return {p.identity: sorted(p.tracks) for p in room.participants.values()}


def test_livekit_mode_publishes_the_microphone_and_shows_the_agents_messages(
    meeting: RoomStack, page: Page, page_log: PageLog, agents: list[Agent]
) -> None:
    before = fallbacks(meeting)
    page.add_init_script(RECORD_CONSTRAINTS)
    page.goto(meeting.launch("lk-page"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=20, log=page_log)
    assert "waiting for the agent" in page.locator("#status-line").inner_text()
    # The page joined its room with the token the gateway issued and published its
    # microphone, asking the browser to clean it up.
    meeting.wait(
        lambda: bool(participants(meeting, "lk-page").get("page-lk-page")),
        within=20,
        what="the page's microphone track",
    )
    [constraints] = page.evaluate("window.microphoneRequests")
    audio = constraints["audio"]
    assert (audio["echoCancellation"], audio["noiseSuppression"], audio["autoGainControl"]) == (
        True,
        True,
        True,
    )

    agent_ = Agent(meeting, "lk-page")
    agents.append(agent_)
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=15, log=page_log)
    agent_.command("publish_sine", freq=330, seconds=30)
    messages: list[dict[str, Any]] = [
        {"type": "agent.state", "state": "listening"},
        {"type": "transcript.user", "text": "what is next", "final": False},
        {"type": "transcript.user", "text": "What is next on the agenda?", "final": True},
        {"type": "agent.state", "state": "thinking"},
        {"type": "tool.started", "call_id": "call_1", "name": "query_database"},
        {"type": "tool.finished", "call_id": "call_1", "name": "query_database",
         "status": "ok", "duration_ms": 231.4},
        {"type": "agent.state", "state": "speaking"},
        {"type": "transcript.assistant", "text": REPLY, "final": True},
        {"type": "metrics.turn", "eou_ms": 300, "stt_ms": 120, "llm_ttft_ms": 180,
         "tts_ttfb_ms": 150, "voice_to_voice_ms": 612.4},
    ]  # fmt: skip
    for message in messages:
        agent_.send(message)
    # Not state messages: another topic, and an unknown type on the right one.
    agent_.send({"type": "agent.state", "state": "idle"}, topic="chat")
    agent_.send({"type": "agent.mood", "mood": "happy"})

    wait_for(
        page,
        "document.body.dataset.state === 'speaking' && window.voicePage.transcript.length === 2"
        " && document.getElementById('status-line').textContent.includes('last turn')",
        timeout_s=15,
        log=page_log,
    )
    # The agent's audio plays through its <audio> element and moves the meter.
    wait_for(
        page,
        "parseFloat(document.getElementById('meter-output').style.width) > 0",
        timeout_s=15,
        log=page_log,
    )
    lines = page.evaluate("window.voicePage.transcript")
    assert [(line["role"], line["text"], line["final"]) for line in lines] == [
        ("user", "What is next on the agenda?", True),
        ("assistant", REPLY, True),
    ]
    assert page.evaluate("window.voicePage.agentStates") == [
        "initializing", "listening", "thinking", "speaking",
    ]  # fmt: skip
    # The catalogue's phrase for the meeting; the raw name and timing in the small print.
    assert page.evaluate("document.getElementById('tool').textContent") == "Lookup finished"
    assert page.locator("#agent-state").inner_text() == "Speaking"  # the tone is audible
    status = page.locator("#status-line").inner_text()
    assert (
        "mode livekit · reason: url_flag · connected · tool query_database ok (231 ms)"
        " · last turn 612 ms"
    ) in status
    data = body_data(page)
    assert (data["mode"], data["fallbackReason"]) == ("livekit", "")
    assert page.evaluate("document.querySelectorAll('audio').length") == 1
    save_screenshot(page, "livekit-mode-speaking")
    assert fallbacks(meeting) == before


def test_no_agent_within_the_timeout_falls_back_to_openai(
    meeting: RoomStack, page: Page, page_log: PageLog
) -> None:
    before = fallbacks(meeting)
    reports = record_fallbacks(page)
    page.goto(meeting.launch("lk-alone"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=20, log=page_log)
    # The room is up but nobody comes: after the default 8 s the page moves on.
    wait_for(
        page,
        "document.body.dataset.fallbackReason === 'agent_timeout'"
        " && document.body.dataset.mode === 'openai'",
        timeout_s=15,
        log=page_log,
    )
    wait_for(page, OPENAI_ANSWERED, timeout_s=30, log=page_log)
    assert [r["reason"] for r in reports] == ["agent_timeout: no agent joined within 8 s"]
    assert fallbacks(meeting) == before + 1
    # It left the empty room.
    meeting.wait(
        lambda: "page-lk-alone" not in participants(meeting, "lk-alone"),
        within=10,
        what="the page to leave its room",
    )


def test_a_room_that_closes_for_good_falls_back_to_openai(
    meeting: RoomStack, page: Page, page_log: PageLog, agents: list[Agent]
) -> None:
    before = fallbacks(meeting)
    reports = record_fallbacks(page)
    page.goto(meeting.launch("lk-drop"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=20, log=page_log)
    agent_ = Agent(meeting, "lk-drop")
    agents.append(agent_)
    agent_.command("publish_sine", freq=330, seconds=30)
    agent_.send({"type": "agent.state", "state": "listening"})
    # The agent's own state: an audible agent shows as speaking, whatever its messages say.
    wait_for(page, "document.body.dataset.agentState === 'listening'", timeout_s=15, log=page_log)
    wait_for(page, "document.querySelectorAll('audio').length === 1", timeout_s=15, log=page_log)

    async def delete_room() -> None:
        async with api.LiveKitAPI(
            meeting.server.url, LIVEKIT_KEY, LIVEKIT_SECRET, failover=False
        ) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room="meeting_lk-drop"))

    meeting.run(delete_room())
    wait_for(
        page,
        "document.body.dataset.fallbackReason === 'room_disconnected'"
        " && document.body.dataset.mode === 'openai'",
        timeout_s=15,
        log=page_log,
    )
    wait_for(page, OPENAI_ANSWERED, timeout_s=30, log=page_log)
    assert [r["reason"] for r in reports] == [
        "room_disconnected: the room dropped (ROOM_DELETED)"
    ]
    assert fallbacks(meeting) == before + 1
    # The agent's <audio> element went with the room.
    assert page.evaluate("document.querySelectorAll('audio').length") == 0


def test_an_agent_that_leaves_and_does_not_return_falls_back_to_openai(
    meeting: RoomStack, page: Page, page_log: PageLog, agents: list[Agent]
) -> None:
    before = fallbacks(meeting)
    reports = record_fallbacks(page)
    page.goto(meeting.launch("lk-left"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=20, log=page_log)
    agent_ = Agent(meeting, "lk-left")
    agents.append(agent_)
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=15, log=page_log)

    agent_.leave()
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=15, log=page_log)
    assert "the agent left" in page.locator("#status-line").inner_text()
    wait_for(
        page,
        "document.body.dataset.fallbackReason === 'agent_left'"
        " && document.body.dataset.mode === 'openai'",
        timeout_s=15,
        log=page_log,
    )
    assert [r["reason"] for r in reports] == [
        "agent_left: the agent left and did not return within 8 s"
    ]
    assert fallbacks(meeting) == before + 1
