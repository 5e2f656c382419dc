"""livekit mode failing mid-conversation, with the real page in Chromium: the agent worker dies
(the page waits for an agent to come back, then falls back to openai and finishes a turn
there; the gateway's breaker counts the report; the worker is restarted), or the LiveKit
stand-in goes away (the page falls back at once). Each test has a stack of its own: both break
it."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from simulators.openai_realtime import Say
from tests.browser.conftest import PageLog, wait_for
from tests.netns import NetNamespace

from .room import RoomStack, room_stack, speak_when_the_agent_is_there, wait_for_registered

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.browser]

AGENT_TIMEOUT_S = 8  # the page's default (voice-client.js agentTimeoutMs)
FELL_BACK = (
    "document.body.dataset.mode === 'openai' && document.body.dataset.fallbackReason === '{}'"
)
# The OpenAI Realtime simulator's answer is on the page and it listens again.
OPENAI_ANSWERED = (
    f"window.voicePage.transcript.some(l => l.role === 'assistant' && l.final"
    f" && l.text === {Say().text!r}) && document.body.dataset.state === 'listening'"
)


@pytest.fixture
def meeting(netns: NetNamespace) -> Iterator[RoomStack]:
    with room_stack(netns) as stack:
        wait_for_registered(stack)
        yield stack


def readiness(meeting: RoomStack) -> dict[str, Any]:
    """The gateway's /readyz body (it shows the breaker)."""

    async def get() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=meeting.url, timeout=10) as client:
            body: dict[str, Any] = (await client.get("/readyz")).json()
            return body

    result: dict[str, Any] = meeting.run(get())
    return result


def left_the_room_before_the_relay(log: PageLog) -> bool:
    """The page stopped LiveKit's microphone before the relay opened its own: one capture of
    the meeting at a time (Chromium's file microphone then plays the question again)."""
    lines = log.lines
    unpublished = next(i for i, line in enumerate(lines) if "unpublishing track" in line)
    reopened = next(i for i, line in enumerate(lines) if "[voice] microphone open at" in line)
    return unpublished < reopened


def test_the_worker_dies_mid_conversation_and_the_page_carries_on_in_openai_mode(
    meeting: RoomStack, page: Page, page_log: PageLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voicegw.supervise")
    failures = readiness(meeting)["breaker"]["failures_in_window"]
    page.goto(meeting.launch("crash1"))
    speak_when_the_agent_is_there(page, page_log)
    # Mid-conversation: the agent has heard the question and is working on it.
    wait_for(
        page,
        "window.__e2e.messages.some(m => m.type === 'transcript.user' && m.final)",
        timeout_s=60,
        log=page_log,
    )
    [worker] = meeting.livekit.workers
    pid = worker.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # the worker and its job processes, as a crash would

    # The agent left: the page waits for it, then falls back within its agent timeout.
    wait_for(page, FELL_BACK.format("agent_left"), timeout_s=AGENT_TIMEOUT_S + 7, log=page_log)
    assert "the agent left and did not return within 8 s" in "\n".join(page_log.lines)
    # ... and finishes a turn in openai mode (through the relay to the Realtime simulator).
    wait_for(page, OPENAI_ANSWERED, timeout_s=45, log=page_log)
    assert left_the_room_before_the_relay(page_log), page_log
    status = page.locator("#status-line").inner_text()
    assert "mode openai · reason: fallback · fell back from livekit: agent_left" in status

    # The gateway's breaker counted the report.
    breaker = readiness(meeting)["breaker"]
    assert breaker["failures_in_window"] == failures + 1
    assert meeting.fallbacks_reported() == 1

    # The supervisor started the worker again, said so, and it is back in service.
    wait_for_registered(meeting)
    assert worker.starts == 2
    [restart] = [r for r in caplog.records if r.msg == "supervised process exited, restarting"]
    assert restart.__dict__["exit"] == "signal SIGKILL"


def test_livekit_goes_away_mid_conversation_and_the_page_carries_on_in_openai_mode(
    meeting: RoomStack, page: Page, page_log: PageLog
) -> None:
    page.goto(meeting.launch("down1"))
    speak_when_the_agent_is_there(page, page_log)
    wait_for(
        page,
        "window.__e2e.messages.some(m => m.type === 'transcript.user' && m.final)",
        timeout_s=60,
        log=page_log,
    )
    meeting.stop()  # the stand-in closes (its rooms first), then its worker stops

    wait_for(page, FELL_BACK.format("room_disconnected"), timeout_s=15, log=page_log)
    assert "room_disconnected: the room dropped (SERVER_SHUTDOWN)" in "\n".join(page_log.lines)
    wait_for(page, OPENAI_ANSWERED, timeout_s=45, log=page_log)
    assert left_the_room_before_the_relay(page_log), page_log
    assert meeting.fallbacks_reported() == 1
