"""When nobody hears the meeting, the page says so large (issue 14, items 2 and 3).

A stopped gateway, a room without its agent: the state word and the orb show it (never
"Listening", never green), the line under the word says why, and retries that cannot go on
for ever stop, saying so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Request, Route

from .conftest import PageLog, Stack, wait_for
from .timeline import (
    PROBLEM,
    WORD,
    assert_legible,
    samples,
    shown,
    start_sampler,
    state_spans,
    tile,
    wait_until_shown,
)

pytestmark = pytest.mark.browser

FAKE = Path(__file__).with_name("fake_livekit_client.mjs")

def session_requests(page: Page) -> list[str]:
    seen: list[str] = []

    def on_request(request: Request) -> None:
        if urlsplit(request.url).path == "/v1/session":
            seen.append(request.url)

    page.on("request", on_request)
    return seen


def stop_gateway(stack: Stack) -> None:
    """Stop the gateway's server (and with it the relay) the way a crash or deploy would."""
    stack.loop.call(lambda: setattr(stack.gateway.server, "should_exit", True))
    deadline_s = 10.0

    async def refused() -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while loop.time() < end:
            try:
                async with httpx.AsyncClient() as client:
                    await client.get(f"{stack.gateway.url}/healthz", timeout=1)
            except httpx.TransportError:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the gateway still answers")

    stack.loop.run(refused())


def test_a_gateway_that_stops_mid_session_shows_offline_then_stops_retrying(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    requests = session_requests(page)
    page.clock.install()  # time flows; the test jumps it ahead to run out the retries
    page.goto(stack.launch(mode="openai"))
    assert wait_until_shown(page, "listening", page_log)["green"]

    stop_gateway(stack)
    # The relay dropped, then the gateway did not answer: said in the word and the orb.
    offline = wait_until_shown(page, "unreachable", page_log)
    assert_legible(tile(page, "offline", [WORD, PROBLEM]))
    assert offline["word"] == "Offline" and not offline["green"], offline
    assert offline["problem"].startswith("Can't reach the voice service · retrying in"), offline
    assert "no answer from" in page.locator("#error-line").inner_text()

    # Retries back off, and stop once they have failed for three minutes.
    for _ in range(40):
        if shown(page)["phase"] == "stopped":
            break
        page.clock.fast_forward(30_000)
        page.wait_for_function("() => document.body.dataset.phase !== 'connecting'")
    stopped = wait_until_shown(page, "stopped", page_log)
    assert_legible(tile(page, "gave-up", [WORD, PROBLEM]))
    assert stopped["word"] == "Stopped" and not stopped["green"], stopped
    assert stopped["problem"] == "Can't reach the voice service; gave up after 3 min", stopped
    attempts = len(requests)
    assert 4 <= attempts <= 14, requests  # backoff: far fewer than one a second
    # Ten minutes later nothing has been tried again (a timer due in them fires during the
    # jump; its request would reach the browser before the round trip below returns).
    page.clock.fast_forward(10 * 60_000)
    page.evaluate("new Promise((resolve) => setTimeout(resolve, 0))")
    assert len(requests) == attempts
    assert shown(page)["phase"] == "stopped"


def test_a_room_without_its_agent_shows_waiting_never_listening(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    def fulfil(route: Route) -> None:
        route.fulfill(path=FAKE, content_type="text/javascript")

    page.route("**/static/vendor/livekit-client.esm.mjs", fulfil)
    page.goto(stack.launch(mode="livekit"))
    waiting = wait_until_shown(page, "waiting", page_log)
    start_sampler(page)
    assert_legible(tile(page, "waiting", [WORD, PROBLEM]))
    assert waiting["word"] == "Waiting" and not waiting["green"], waiting
    assert waiting["problem"] == "The assistant has not joined yet", waiting

    # Nobody joins: the page falls back after 8 s. Meanwhile the fake microphone spoke, and
    # nothing said the assistant heard it.
    wait_for(page, "document.body.dataset.mode === 'openai'", timeout_s=12, log=page_log)
    taken = samples(page)
    [wait] = state_spans(taken, "waiting")
    assert wait.ms > 6000, wait
    assert {s.state for s in taken if s.t_ms < wait.end_ms} == {"waiting"}
