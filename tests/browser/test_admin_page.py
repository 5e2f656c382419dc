"""The admin page (`/admin`) in Chromium, on a gateway with a history: it asks for the API key,
lists sessions with mode, duration, v2v p50 and tool outcomes, filters them, and opens one
session's halves and turns. What people said is shown as text, never run as markup; a wrong
key is refused and forgotten; the page's Content-Security-Policy refuses nothing it does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from history import History, HistoryConfig
from history.database import sqlite_url
from pipelines.contracts import MetricsTurn, ToolResult, load_settings
from tests.stack import API_KEY, gateway_env
from voicegw.serve import running_gateway

from .conftest import BackgroundLoop, _pending_tasks

pytestmark = pytest.mark.browser

MARKUP = '<img src=x onerror="window.pwned = 1">Send Bob the budget'
EMAIL = {"to": "bob@example.com", "subject": "Budget", "body": "attached"}


@dataclass
class Admin:
    url: str


def _record(history: History) -> None:
    recorder = history.recorder
    recorder.session_issued(session_id="s1", user="ann@example.com", mode="livekit",
                            reason="allowlist")  # fmt: skip
    agent = recorder.open(session_id="s1", mode="livekit", user="ann@example.com")
    agent.user_said(1, MARKUP)
    ok = ToolResult(call_id="c1", name="send_email", status="ok", output='{"sent":true}',
                    duration_ms=240.0)  # fmt: skip
    agent.tool_called(1, ok, EMAIL)
    agent.agent_said(1, "I sent Bob the budget.")
    agent.turn_metrics(1, MetricsTurn(voice_to_voice_ms=600.0, eou_ms=200.0))
    agent.ended("room_disconnected")
    recorder.fallback_reported(session_id="s1", reason="agent left")
    recorder.session_issued(session_id="s1", user="ann@example.com", mode="openai",
                            reason="fallback")  # fmt: skip
    relay = recorder.open(session_id="s1", mode="openai", user="ann@example.com")
    relay.user_said(1, "Did it go?")
    relay.agent_said(1, "Yes.")
    relay.turn_metrics(1, MetricsTurn(voice_to_voice_ms=800.0))
    relay.ended("client_closed")
    for sid in ("s2", "s3"):
        recorder.session_issued(session_id=sid, user=None, mode="openai", reason="default")
        half = recorder.open(session_id=sid, mode="openai")
        failed = ToolResult(call_id="c9", name="query_database", status="error",
                            output="n8n answered 500", duration_ms=90.0)  # fmt: skip
        half.tool_called(1, failed, {"query": "travel"})
        half.ended("client_closed")


@pytest.fixture(scope="module")
def background_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture
def admin(background_loop: BackgroundLoop, tmp_path: Path) -> Iterator[Admin]:
    loop = background_loop
    exits = contextlib.AsyncExitStack()
    history = History(HistoryConfig(url=sqlite_url(tmp_path / "history.db")), retention=False)
    served = loop.run(
        exits.enter_async_context(
            running_gateway(load_settings(gateway_env()), history=history)
        )
    )
    try:

        async def fill() -> None:
            _record(history)
            await history.recorder.flush()

        loop.run(fill())
        yield Admin(url=served.url)
    finally:
        loop.run(exits.aclose())
        leaked = loop.run(_pending_tasks())
        assert not leaked, f"the servers left asyncio tasks behind: {leaked}"


def _unlock(page: Page, admin: Admin, key: str = API_KEY) -> None:
    page.goto(f"{admin.url}/admin")
    expect(page.locator("body")).to_have_attribute("data-state", "locked")
    page.fill("#key", key)
    page.click("#unlock button[type=submit]")


def test_the_page_lists_sessions_and_opens_ones_turns(page: Page, admin: Admin) -> None:
    _unlock(page, admin)
    expect(page.locator("body")).to_have_attribute("data-state", "ready")
    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(3)
    s1 = page.locator('tr[data-session-id="s1"]')
    expect(s1.locator(".mode")).to_have_text("livekit → openai")
    expect(s1.locator(".v2v")).to_have_text("700 ms")  # the median of 600 and 800
    expect(s1.locator(".tools")).to_have_text("1 / 0")
    expect(s1.locator(".fell-back")).to_have_text("yes: agent left")
    expect(page.locator('tr[data-session-id="s2"] .tools')).to_have_text("0 / 1")
    assert page.evaluate("sessionStorage.length") == 1 and API_KEY not in page.url

    s1.click()
    expect(page.locator("#detail")).to_be_visible()
    halves = page.locator("#legs .leg")
    expect(halves).to_have_count(2)
    expect(halves.nth(0)).to_have_attribute("data-mode", "livekit")
    expect(halves.nth(1)).to_have_attribute("data-mode", "openai")
    said = halves.nth(0).locator(".said.user")
    expect(said).to_have_text(f"user{MARKUP}")  # shown as text
    assert page.locator("#legs img").count() == 0
    assert page.evaluate("window.pwned") is None
    tool = halves.nth(0).locator('[data-tool="send_email"]')
    expect(tool).to_contain_text("send_email ok 240 ms")
    expect(tool).to_contain_text("bob@example.com")
    expect(halves.nth(0).locator(".figures")).to_contain_text("v2v 600 ms")
    expect(page.locator("#detail-summary")).to_contain_text("fallback")

    page.click("#close-detail")
    page.select_option('#filters select[name="mode"]', "livekit")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-session-id", "s1")


def test_a_wrong_key_is_refused_and_forgotten(page: Page, admin: Admin) -> None:
    _unlock(page, admin, key="not-the-key")
    expect(page.locator("#unlock-message")).to_have_text("That key was refused.")
    expect(page.locator("body")).to_have_attribute("data-state", "locked")
    assert page.evaluate("sessionStorage.length") == 0
    expect(page.locator("#sessions tbody tr")).to_have_count(0)
