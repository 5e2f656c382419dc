"""Fixtures of the end-to-end tests: a network namespace per module, the spoken question,
Chromium launched inside the namespace with its fake microphone playing it, and pages that
carry the test's probe (`page_probe.js`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    ROOT,
    PageLog,
    SpokenInput,
    require_tools,
)
from tests.netns import NetNamespace, netns  # noqa: F401 - fixture

from .room import spoken_question

PROBE = Path(__file__).with_name("page_probe.js")
ARTIFACTS = ROOT / "test-artifacts" / "e2e"


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> SpokenInput:
    require_tools()
    return spoken_question(tmp_path_factory.mktemp("question"))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright,
    question: SpokenInput,
    netns: NetNamespace,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Browser]:
    """Chromium born in the module's namespace; its microphone plays the question once per
    capture (`%noloop`), from the start."""
    wrapper = netns.wrapper_script(tmp_path_factory.mktemp("chromium"), str(CHROMIUM))
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={question.path}%noloop"]
    browser = playwright.chromium.launch(executable_path=str(wrapper), args=flags)
    yield browser
    browser.close()


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, page_log: PageLog) -> Iterator[Page]:
    """A fresh page at 1280x720 with the probe; its final state is saved as
    test-artifacts/e2e/<test>.png."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.add_init_script(path=str(PROBE))
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        page_log.add(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: page_log.add(f"pageerror: {error}"))
    yield page
    with contextlib.suppress(Exception):  # a crashed page has no picture; the test says why
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    context.close()
