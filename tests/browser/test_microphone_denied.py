"""A microphone the browser will not open shows as such (issue 14, item 2).

This module's Chromium has a fake capture device but no fake permission prompt, so every
getUserMedia is refused the way a person's "Block" refuses it (NotAllowedError).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route

from .conftest import CHROMIUM, CHROMIUM_FLAGS, PageLog, SpokenInput, Stack
from .timeline import PROBLEM, WORD, assert_legible, tile, wait_until_shown

pytestmark = pytest.mark.browser

FAKE = Path(__file__).with_name("fake_livekit_client.mjs")


@pytest.fixture(scope="module")
def browser(playwright: Playwright, spoken_input: SpokenInput) -> Iterator[Browser]:
    """Chromium that asks for permission, and is told no (headless: nobody to click)."""
    flags = [flag for flag in CHROMIUM_FLAGS if flag != "--use-fake-ui-for-media-stream"]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
    yield browser
    browser.close()


def test_openai_mode_without_a_microphone_says_so_and_opens_no_relay(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    page.goto(stack.launch(mode="openai"))
    found = wait_until_shown(page, "no-microphone", page_log)
    assert_legible(tile(page, "no-microphone", [WORD, PROBLEM]))
    assert found["word"] == "No microphone" and not found["green"], found
    assert found["problem"].startswith(
        "Permission to use the microphone was denied · retrying in"
    ), found
    # Without the meeting's audio there is nothing to relay: no upstream session was opened.
    assert stack.simulator(lambda sim: sim.connections) == 0


def test_livekit_mode_without_a_microphone_retries_and_does_not_blame_livekit(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    def fulfil(route: Route) -> None:
        route.fulfill(path=FAKE, content_type="text/javascript")

    page.route("**/static/vendor/livekit-client.esm.mjs", fulfil)
    page.goto(stack.launch(mode="livekit"))
    found = wait_until_shown(page, "no-microphone", page_log)
    assert found["word"] == "No microphone" and not found["green"], found
    assert page.evaluate("fakeLiveKit.disconnects") >= 1  # it left the room
    # A fallback would tell the gateway's breaker that LiveKit failed: it did not.
    assert stack.fallbacks_reported == 0
    assert page.evaluate("document.body.dataset.mode") == "livekit"
