"""The meeting page in headless Chromium against the real gateway and relay.

The page is opened the way Recall.ai opens it: at the URL `POST /v1/launch` returns, on a
production-configured gateway (so every session request must carry the launch token).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page

from .conftest import BackgroundLoop, PageLog, Stack, start_stack, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def stack(background_loop: BackgroundLoop) -> Iterator[Stack]:
    yield start_stack(background_loop)


def body_data(page: Page) -> dict[str, str]:
    data: dict[str, str] = page.evaluate("({...document.body.dataset})")
    return data


def test_the_launch_token_leaves_the_visible_url(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    url = stack.launch(mode="openai", session_id="launch-hygiene")
    token = parse_qs(urlsplit(url).query)["launch"][0]

    page.goto(url)
    # The gateway runs in production: a session (and so a mode) only comes with the token.
    wait_for(page, "document.body.dataset.mode === 'openai'", timeout_s=10, log=page_log)

    href: str = page.evaluate("location.href")
    assert token not in href
    assert "launch=" not in href
    assert parse_qs(urlsplit(href).query) == {"session": ["launch-hygiene"], "mode": ["openai"]}
    assert token not in page.content()


def test_gateway_errors_show_as_text_and_the_page_keeps_retrying(
    stack: Stack, page: Page, page_log: PageLog
) -> None:
    session_requests: list[str] = []
    page.on(
        "request",
        lambda request: session_requests.append(request.url)
        if "/v1/session" in request.url
        else None,
    )

    page.goto(f"{stack.gateway.url}/?session=bad-token&launch=not-a-launch-token")

    error = wait_for(
        page,
        "(() => { const e = document.getElementById('error-line');"
        " return !e.hidden && e.textContent.includes('invalid_launch') && e.textContent; })()",
        timeout_s=10,
        log=page_log,
    )
    assert "session request failed: 401 invalid_launch" in error
    wait_for(page, "window.voicePage.voice.status.attempt >= 3", timeout_s=15, log=page_log)
    assert len(session_requests) >= 3
    assert body_data(page)["phase"] == "connecting"
    assert "retrying in" in page.locator("#status-line").inner_text()
