"""The page hosted on another origin than its gateway (issue 14, item 12).

A second server on 127.0.0.1 serves client-config/ the way a static host (Vercel, say) would,
its index.html configured with the gateway's origin (`<meta name="voice-gateway">`). The
gateway lists that origin in GATEWAY_CORS_ORIGINS; Chromium enforces the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Request
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.app import PAGE_DIR
from simulators.server import RunningServer, serve

from .conftest import FINAL_ASSISTANT, BackgroundLoop, PageLog, Stack, closed_port, wait_for
from .timeline import wait_until_shown

pytestmark = pytest.mark.browser

GATEWAY_META = '<meta name="voice-gateway" content="">'


class PageHost:
    """A static host for the page; `gateways` is what its index.html is configured with."""

    def __init__(self) -> None:
        self.gateways = ""
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Mount("/static", StaticFiles(directory=PAGE_DIR)),
            ]
        )

    async def index(self, request: HttpRequest) -> HTMLResponse:
        html = (PAGE_DIR / "index.html").read_text()
        assert GATEWAY_META in html, "index.html no longer has the configurable meta tag"
        meta = f'<meta name="voice-gateway" content="{self.gateways}">'
        return HTMLResponse(html.replace(GATEWAY_META, meta))


@contextlib.contextmanager
def hosted(loop: BackgroundLoop, port: int = 0) -> Iterator[tuple[PageHost, RunningServer]]:
    host = PageHost()
    exits = contextlib.AsyncExitStack()
    server = loop.run(exits.enter_async_context(serve(host.app, port=port)))
    try:
        yield host, server
    finally:
        loop.run(exits.aclose())


@pytest.fixture
def host_port() -> int:
    """The page host's port, known before the gateway is configured with its origin."""
    return closed_port()


@pytest.fixture
def gateway_env(host_port: int) -> dict[str, str]:
    return {"GATEWAY_CORS_ORIGINS": f"http://127.0.0.1:{host_port}"}


@pytest.fixture
def page_host(
    stack: Stack, background_loop: BackgroundLoop, host_port: int
) -> Iterator[tuple[PageHost, RunningServer]]:
    """Started after the gateway and stopped before it (the stack checks its loop is idle)."""
    with hosted(background_loop, host_port) as found:
        yield found


def on_host(launch_url: str, host: RunningServer) -> str:
    """The launcher's page URL, moved to the page's host (what a launcher configured for a
    hosted page would hand Recall.ai)."""
    parts = urlsplit(launch_url)
    return f"{host.url}/?{parts.query}"


def test_a_page_hosted_elsewhere_holds_a_turn_through_its_gateway(
    stack: Stack, page: Page, page_log: PageLog, page_host: tuple[PageHost, RunningServer]
) -> None:
    host, server = page_host
    host.gateways = stack.gateway.url
    asked: dict[str, set[str]] = {}

    def on_request(request: Request) -> None:
        parts = urlsplit(request.url)
        asked.setdefault(f"{parts.scheme}://{parts.netloc}", set()).add(parts.path)

    page.on("request", on_request)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url.split("?")[0]))
    page.goto(on_host(stack.launch(mode="openai"), server))
    wait_for(page, FINAL_ASSISTANT, timeout_s=30, log=page_log)
    assert page.evaluate("location.origin") == server.url
    # The page's files (the tool phrases too) from its host; sessions and audio from the
    # gateway.
    assert set(asked) == {server.url, stack.gateway.url}
    assert "/static/schemas/tool-activity.json" in asked[server.url]
    assert asked[stack.gateway.url] == {"/v1/session"}
    assert sockets == [f"{stack.gateway.ws_url}/v1/realtime"]


def test_the_link_may_only_pick_a_gateway_the_page_is_configured_for(
    stack: Stack, page: Page, page_log: PageLog, page_host: tuple[PageHost, RunningServer]
) -> None:
    host, server = page_host
    host.gateways = stack.gateway.url
    elsewhere = f"http://127.0.0.1:{closed_port()}"
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))

    page.goto(f"{server.url}/?gateway={elsewhere}&mode=openai")
    found = wait_until_shown(page, "stopped", page_log)
    assert found["problem"] == f"This page is not set up for the gateway {elsewhere}", found
    assert not [url for url in asked if url.startswith(elsewhere)]


def test_an_origin_the_gateway_does_not_list_cannot_use_it(
    stack: Stack, page: Page, page_log: PageLog, background_loop: BackgroundLoop
) -> None:
    with hosted(background_loop) as (host, server):  # not in GATEWAY_CORS_ORIGINS
        host.gateways = stack.gateway.url
        page.goto(on_host(stack.launch(mode="openai"), server))
        found = wait_until_shown(page, "unreachable", page_log)
        assert found["problem"].startswith("Can't reach the voice service"), found
        assert stack.simulator(lambda sim: sim.connections) == 0
