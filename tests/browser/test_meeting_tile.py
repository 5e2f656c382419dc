"""The page reads on a meeting tile (issue 14, item 4).

The bot's camera is the page at 1280x720; the meeting sees it scaled down, often to 320x180.
Each scenario saves both pictures (`test-artifacts/browser/tile-*-{1280x720,320x180}.png`: the
page rendered in a 320x180 window is the same picture at a quarter of the size) and measures
what must read there: the state word, the line under it (tool activity or why nobody hears
the meeting), the current utterance and the backup-service badge.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, Route

from simulators.openai_realtime import CallTool, Say

from .conftest import FINAL_ASSISTANT, PageLog, Stack, wait_for
from .timeline import (
    BADGE,
    LINE_UNDER,
    PROBLEM,
    UTTERANCE,
    WORD,
    assert_legible,
    tile,
    wait_until_shown,
)

pytestmark = pytest.mark.browser

FAKE = Path(__file__).with_name("fake_livekit_client.mjs")
def serve_fake_livekit(page: Page) -> None:
    def fulfil(route: Route) -> None:
        route.fulfill(path=FAKE, content_type="text/javascript")

    page.route("**/static/vendor/livekit-client.esm.mjs", fulfil)


def test_a_tool_at_work_reads_on_the_tile(stack: Stack, page: Page, page_log: PageLog) -> None:
    serve_fake_livekit(page)
    page.goto(stack.launch(mode="livekit"))
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)
    page.evaluate("fakeLiveKit.agentJoins('agent-AJ_test', { silent: true })")
    for message in [
        {"type": "agent.state", "state": "listening"},
        {"type": "transcript.user", "final": True,
         "text": "Could you email Dana the budget summary and the launch dates?"},
        {"type": "agent.state", "state": "thinking"},
        {"type": "tool.started", "call_id": "call_1", "name": "send_email"},
    ]:
        page.evaluate("m => fakeLiveKit.send(m)", message)
    wait_until_shown(page, "thinking", page_log)

    measured = tile(page, "tool-running", [WORD, LINE_UNDER, UTTERANCE])
    assert measured[LINE_UNDER]["text"] == "Sending the email…"  # the catalogue's phrase
    assert measured[WORD]["text"] == "Thinking"
    assert_legible(measured)

    page.evaluate(
        """() => {
          fakeLiveKit.send({ type: 'tool.finished', call_id: 'call_1', name: 'send_email',
                             status: 'ok', duration_ms: 840 });
          fakeLiveKit.send({ type: 'agent.state', state: 'speaking' });
          fakeLiveKit.send({ type: 'transcript.assistant', final: true,
                             text: "Done: I've emailed Dana the budget summary." });
          fakeLiveKit.play(3000);
        }"""
    )
    wait_until_shown(page, "speaking", page_log)
    measured = tile(page, "speaking", [WORD, LINE_UNDER, UTTERANCE])
    assert measured[LINE_UNDER]["text"] == "Email sent"
    assert measured[UTTERANCE]["text"].startswith("Assistant")
    assert_legible(measured)


def test_the_backup_voice_service_reads_on_the_tile(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    # LiveKit is unreachable: the page falls back to openai, which calls a tool for real
    # (relay -> n8n simulator) and answers.
    stack.simulator(
        lambda sim: sim.script(
            CallTool("query_database", {"query": "the agenda"}),
            Say(text="(simulated) Two items: the budget and the launch plan.", audio_ms=900),
        )
    )
    page.goto(stack.launch(mode="livekit"))
    wait_for(page, FINAL_ASSISTANT, timeout_s=40, log=page_log)
    # The reply's audio may still be playing when its final transcript arrives (the word
    # follows the sound: data-state, not the agent's own data-agent-state).
    wait_for(page, "document.body.dataset.state === 'listening'", timeout_s=15, log=page_log)

    measured = tile(page, "backup", [WORD, LINE_UNDER, UTTERANCE, BADGE])
    assert measured[BADGE]["text"] == "Backup voice service"
    assert measured[LINE_UNDER]["text"] == "Lookup finished"
    assert measured[WORD]["text"] == "Listening"
    assert_legible(measured)


def test_the_meeting_speaking_reads_on_the_tile(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    page.goto(stack.launch(mode="openai"))
    wait_until_shown(page, "meeting-speaking", page_log)
    measured = tile(page, "meeting-speaking", [WORD])
    assert measured[WORD]["text"] == "Hearing you"
    assert_legible(measured)


def test_nobody_hearing_the_meeting_reads_on_the_tile(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    page.goto(f"{stack.gateway.url}/?session=abc&launch=garbage")
    wait_until_shown(page, "stopped", page_log)
    measured = tile(page, "stopped", [WORD, PROBLEM])
    assert_legible(measured)
