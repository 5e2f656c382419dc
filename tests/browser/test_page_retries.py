"""What the page retries and what it does not (issue 14, item 3).

A 4xx answer cannot succeed on retry: the page stops at once and shows the reason large. No
answer, a 5xx, 408 or 429 are retried with a capped backoff until they have lasted three
minutes, then the page stops and says why. `?mode=` is read case-insensitively.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Request, Route

from gateway.app import create_app
from pipelines.contracts import load_settings
from simulators.server import RunningServer

from .conftest import BackgroundLoop, PageLog, Stack, serve_late, wait_for
from .timeline import shown, wait_until_shown

pytestmark = pytest.mark.browser

FAKE = Path(__file__).with_name("fake_livekit_client.mjs")


def session_requests(page: Page) -> list[str]:
    seen: list[str] = []

    def on_request(request: Request) -> None:
        if urlsplit(request.url).path == "/v1/session":
            seen.append(request.url)

    page.on("request", on_request)
    return seen


def no_retry_within(page: Page, minutes: int) -> None:
    """Jump the page's clock ahead: a retry due in that time fires during the jump, and its
    request reaches the browser before the round trip that follows returns."""
    page.clock.fast_forward(minutes * 60_000)
    page.evaluate("new Promise((resolve) => setTimeout(resolve, 0))")


@pytest.fixture
def unconfigured_gateway(background_loop: BackgroundLoop) -> Iterator[RunningServer]:
    """A dev gateway without OPENAI_API_KEY: openai sessions are 503 mode_unavailable."""
    exits = contextlib.AsyncExitStack()
    server = background_loop.run(
        exits.enter_async_context(
            serve_late(lambda s: create_app(load_settings({"GATEWAY_PUBLIC_URL": s.url})))
        )
    )
    try:
        yield server
    finally:
        background_loop.run(exits.aclose())


def test_a_refused_launch_token_stops_at_once_and_says_why(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    requests = session_requests(page)
    page.clock.install()
    page.goto(f"{stack.gateway.url}/?session=abc&launch=garbage")

    found = wait_until_shown(page, "stopped", page_log)
    assert found["word"] == "Stopped" and not found["green"], found
    assert found["problem"] == (
        "This meeting link is not valid: it has expired or was changed"
    ), found
    assert "401 invalid_launch" in page.locator("#error-line").inner_text()
    no_retry_within(page, 10)
    assert len(requests) == 1
    assert shown(page)["phase"] == "stopped"


def test_an_unknown_mode_stops_before_asking_the_gateway(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    requests = session_requests(page)
    page.goto(f"{stack.gateway.url}/?mode=webrtc")
    found = wait_until_shown(page, "stopped", page_log)
    assert found["problem"] == "The link asks for a voice mode that does not exist", found
    assert "mode must be one of: livekit, openai" in page.locator("#error-line").inner_text()
    assert requests == []


def test_the_mode_is_case_insensitive(stack: Stack, page: Page, page_log: PageLog) -> None:
    def fulfil(route: Route) -> None:
        route.fulfill(path=FAKE, content_type="text/javascript")

    page.route("**/static/vendor/livekit-client.esm.mjs", fulfil)
    requests = session_requests(page)
    url = stack.launch(mode="livekit").replace("mode=livekit", "mode=LiveKit")
    page.goto(url)
    wait_for(page, "document.body.dataset.phase === 'waiting'", timeout_s=10, log=page_log)
    assert page.evaluate("document.body.dataset.mode") == "livekit"
    assert parse_qs(urlsplit(requests[0]).query)["mode"] == ["livekit"]


def test_a_gateway_answering_503_is_retried_with_backoff_then_given_up(
    unconfigured_gateway: RunningServer, page: Page, page_log: PageLog
) -> None:
    requests = session_requests(page)
    page.clock.install()
    page.goto(f"{unconfigured_gateway.url}/?mode=openai")
    found = wait_until_shown(page, "unreachable", page_log)
    assert found["problem"].startswith(
        "The voice service is not available (503) · retrying in"
    ), found
    assert "503 mode_unavailable" in page.locator("#error-line").inner_text()

    for _ in range(40):
        if shown(page)["phase"] == "stopped":
            break
        page.clock.fast_forward(30_000)
        page.wait_for_function("() => document.body.dataset.phase !== 'connecting'")  # CSP: no eval
    found = wait_until_shown(page, "stopped", page_log)
    assert found["problem"] == (
        "The voice service is not available (503); gave up after 3 min"
    ), found
    attempts = len(requests)
    assert 4 <= attempts <= 14, requests
    no_retry_within(page, 10)
    assert len(requests) == attempts


def test_a_rate_limited_page_asks_again_no_sooner_than_retry_after(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    refused: list[str] = []

    def rate_limit_once(route: Route) -> None:
        if refused:
            route.continue_()
            return
        refused.append(route.request.url)
        route.fulfill(
            status=429,
            headers={"Retry-After": "2"},
            content_type="application/json",
            body=json.dumps({"error": {"code": "rate_limited", "message": "try again in 2 s"}}),
        )

    page.route("**/v1/session?*", rate_limit_once)
    page.goto(stack.launch(mode="openai"))
    # The first backoff is at most 0.5 s; the gateway's Retry-After makes it 2 s.
    wait_for(
        page,
        "(window.voicePage.voice.status.detail || '').startsWith('retrying in 2 s')",
        timeout_s=10,
        log=page_log,
    )
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=15, log=page_log)
    assert len(refused) == 1
