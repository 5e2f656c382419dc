"""Fixtures of the meeting-page tests: Debian's headless Chromium, driven with Playwright's sync
API, against the real gateway (and relay) served on 127.0.0.1.

Playwright's sync API cannot run inside an event loop, so the servers run on a loop of their
own in a background thread (`BackgroundLoop`); the tests stay synchronous. One Chromium serves
a whole module: its fake microphone plays one espeak-ng utterance, from the start, each time a
page opens the microphone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import shutil
import socket
import subprocess
import threading
import wave
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright
from starlette.applications import Starlette

from gateway.app import create_app
from pipelines.contracts import Settings, load_settings
from simulators.openai_realtime import RealtimeSimulator
from simulators.server import RunningServer, serve
from voicegw.serve import SERVER_OPTIONS
from voicegw.simulate import simulated_stack

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"

# Flags that work headless as root on this machine and in CI: no sandbox (root), no GPU, no
# background traffic, and a fake camera/microphone fed from a WAV file without a prompt.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]

UTTERANCE = "Hello, could you tell me what is on the agenda for today?"
SPEECH_LEVEL = 0.02  # |amplitude| (full scale 1.0) above which a sample counts as speech

_T = TypeVar("_T")


# -- servers on a background loop ----------------------------------------------------------


class BackgroundLoop:
    """An event loop in a daemon thread, for servers that sync tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the loop's thread (to read state the servers own)."""

        async def call() -> _T:
            return fn()

        return self.run(call())

    def close(self) -> None:
        """Cancel what is left, stop the loop and close it, all on its own thread (the calling
        thread may be running a loop of its own: Playwright's sync API does)."""
        self.run(_cancel_others())
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _pending_tasks() -> list[str]:
    """Tasks still running on the servers' loop, once a loop turn let finishing ones end."""
    await asyncio.sleep(0)
    current = asyncio.current_task()
    return [repr(t.get_coro()) for t in asyncio.all_tasks() if t is not current and not t.done()]


async def _cancel_others() -> None:
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@contextlib.asynccontextmanager
async def serve_late(build: Callable[[RunningServer], Starlette]) -> AsyncIterator[RunningServer]:
    """Serve the app `build(server)` returns, built once the port is known (so the gateway's
    GATEWAY_PUBLIC_URL can name it)."""
    app: Starlette | None = None

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        assert app is not None, "the app is built before the server is handed out"
        await app(scope, receive, send)

    async with serve(asgi, **SERVER_OPTIONS) as server:  # as `voicegw serve` serves it
        app = build(server)
        yield server


# -- the spoken input ----------------------------------------------------------------------


@dataclass(frozen=True)
class SpokenInput:
    """The WAV the fake microphone plays, and how much speech it holds."""

    path: Path
    sample_rate: int
    speech_s: float  # from the first to the last sample above SPEECH_LEVEL


def speech_span_s(samples: np.ndarray[Any, np.dtype[np.int16]], sample_rate: int) -> float:
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_LEVEL * 32767)
    if len(loud) == 0:
        return 0.0
    return float(loud[-1] - loud[0] + 1) / sample_rate


def make_spoken_input(directory: Path) -> SpokenInput:
    """espeak-ng speaks UTTERANCE; sox puts 0.5 s of silence before it and 2.5 s after it, so
    server-side VAD sees the speech end."""
    raw = directory / "utterance-raw.wav"
    path = directory / "utterance.wav"
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(raw), UTTERANCE], check=True)
    subprocess.run(
        ["sox", str(raw), "-b", "16", "-c", "1", str(path), "pad", "0.5", "2.5"], check=True
    )
    return spoken_input_from(path)


def spoken_input_from(path: Path) -> SpokenInput:
    """A 16-bit mono WAV and the span of its speech."""
    with wave.open(str(path), "rb") as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    return SpokenInput(path=path, sample_rate=rate, speech_s=speech_span_s(samples, rate))


# -- the browser ---------------------------------------------------------------------------


def require_tools() -> None:
    """The browser tests do not skip: `make test` installs what they need."""
    missing = [str(CHROMIUM)] if not CHROMIUM.exists() else []
    missing += [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make system-deps` (make test does)")


@pytest.fixture(scope="module")
def spoken_input(tmp_path_factory: pytest.TempPathFactory) -> SpokenInput:
    require_tools()
    return make_spoken_input(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, spoken_input: SpokenInput) -> Iterator[Browser]:
    # `%noloop`: the file plays once per capture, then the microphone is silent.
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={spoken_input.path}%noloop"]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
    yield browser
    browser.close()


@dataclass
class PageLog:
    """What the page printed, for failure messages, and what its Content-Security-Policy
    refused (Chromium says so on the console)."""

    lines: list[str] = field(default_factory=list)
    refused_by_csp: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        if "Content Security Policy" in line:
            self.refused_by_csp.append(line)

    def __str__(self) -> str:
        return "\n".join(self.lines[-60:])


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


def save_screenshot(page: Page, name: str) -> Path:
    """Save what the page shows now as test-artifacts/browser/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, page_log: PageLog) -> Iterator[Page]:
    """A fresh page at 1280x720; its final state is saved as test-artifacts/browser/<test>.png.
    Whatever the page does, its Content-Security-Policy must not have refused any of it."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        page_log.add(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: page_log.add(f"pageerror: {error}"))
    yield page
    with contextlib.suppress(Exception):  # a crashed page has no picture; the test says why
        save_screenshot(page, request.node.name)
    context.close()
    assert not page_log.refused_by_csp, "\n".join(page_log.refused_by_csp)


# -- the gateway ---------------------------------------------------------------------------


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Stack:
    """The gateway (with its relay) and the OpenAI Realtime simulator on 127.0.0.1, and the
    secrets the page must never see."""

    loop: BackgroundLoop
    gateway: RunningServer
    app: Starlette
    settings: Settings
    realtime: RealtimeSimulator
    api_key: str
    secrets: dict[str, str]

    def launch(self, *, mode: str | None = None, session_id: str | None = None) -> str:
        """The page URL the launcher hands Recall.ai (`POST /v1/launch`)."""
        body: dict[str, str] = {}
        if mode is not None:
            body["mode"] = mode
        if session_id is not None:
            body["session_id"] = session_id
        response = httpx.post(
            f"{self.gateway.url}/v1/launch",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        url: str = response.json()["page_url"]
        return url

    @property
    def fallbacks_reported(self) -> int:
        """Fallback reports that counted (a session's first, as the admin view shows them)."""

        async def counted() -> int:
            overview = await self.app.state.gateway.router.overview()
            reported: int = overview.counts.fallbacks_reported
            return reported

        return self.loop.run(counted())

    def received_audio(self) -> np.ndarray[Any, np.dtype[np.int16]]:
        """Every pcm16 sample the simulator was sent (`input_audio_buffer.append`), in order."""
        chunks: list[str] = self.loop.call(
            lambda: [e["audio"] for e in self.realtime.of_type("input_audio_buffer.append")]
        )
        pcm = b"".join(base64.b64decode(chunk) for chunk in chunks)
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16)

    def simulator(self, fn: Callable[[RealtimeSimulator], _T]) -> _T:
        """Read or change the simulator on its own thread."""
        return self.loop.call(lambda: fn(self.realtime))


def production_environment(gateway_url: str, **extra: str) -> dict[str, str]:
    """A production configuration (launch tokens required) with throwaway secrets; LiveKit
    points at a closed port, so livekit sessions cannot connect."""
    return {
        "VOICEGW_ENV": "production",
        "GATEWAY_SECRET": secrets.token_urlsafe(32),
        "GATEWAY_API_KEY": "gk-" + secrets.token_urlsafe(24),
        "GATEWAY_PUBLIC_URL": gateway_url,
        "LIVEKIT_URL": f"ws://127.0.0.1:{closed_port()}",
        "LIVEKIT_API_KEY": "lk-" + secrets.token_urlsafe(12),
        "LIVEKIT_API_SECRET": "lks-" + secrets.token_urlsafe(24),
        "OPENAI_API_KEY": "sk-test-" + secrets.token_urlsafe(24),
        # espeak's comma pause must not end the turn early.
        "OPENAI_VAD_SILENCE_MS": "700",
        **extra,
    }


SECRET_VARIABLES = (
    "GATEWAY_SECRET",
    "GATEWAY_API_KEY",
    "LIVEKIT_API_SECRET",
    "OPENAI_API_KEY",
)


@pytest.fixture(scope="module")
def background_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture
def gateway_env() -> dict[str, str]:
    """More gateway environment for the stack; a test module overrides it (CORS origins)."""
    return {}


@pytest.fixture
def stack(background_loop: BackgroundLoop, gateway_env: dict[str, str]) -> Iterator[Stack]:
    """A fresh simulator and gateway per test (cheap; the browser is the expensive part)."""
    loop = background_loop
    exits = contextlib.AsyncExitStack()
    realtime = RealtimeSimulator(api_key="sk-test-" + secrets.token_urlsafe(24))
    simulated = loop.run(
        exits.enter_async_context(
            simulated_stack(load_settings({}), "instant", realtime=realtime)
        )
    )
    built: dict[str, Any] = {}

    def build(server: RunningServer) -> Starlette:
        # Production settings (launch tokens required), pointed at the simulated providers.
        environment = production_environment(
            server.url, **simulated.providers.env, **gateway_env
        )
        built["environment"] = environment
        built["settings"] = settings = load_settings(environment)
        built["app"] = app = create_app(settings)
        return app

    try:
        gateway = loop.run(exits.enter_async_context(serve_late(build)))
        environment: dict[str, str] = built["environment"]
        yield Stack(
            loop=loop,
            gateway=gateway,
            app=built["app"],
            settings=built["settings"],
            realtime=realtime,
            api_key=environment["GATEWAY_API_KEY"],
            secrets={name: environment[name] for name in SECRET_VARIABLES},
        )
    finally:
        loop.run(exits.aclose())
        leaked = loop.run(_pending_tasks())
        assert not leaked, f"the servers left asyncio tasks behind: {leaked}"


# The turn is over: the assistant's answer is on the page and the agent listens again.
FINAL_ASSISTANT = (
    "window.voicePage.transcript.some(l => l.role === 'assistant' && l.final) && "
    "document.body.dataset.state === 'listening'"
)


def wait_for(page: Page, expression: str, *, timeout_s: float, log: PageLog) -> Any:
    """Wait until `expression` (JavaScript) is truthy in the page; fail with the page's log."""
    try:
        # As a function: Playwright compiles a bare expression with eval in the page, which
        # the page's Content-Security-Policy refuses (and must: no 'unsafe-eval').
        predicate = f"() => ({expression})"
        return page.wait_for_function(predicate, timeout=timeout_s * 1000).json_value()
    except Exception as exc:
        state = page.evaluate("JSON.stringify(document.body.dataset)")
        status = page.locator("#status-line").inner_text()
        errors = page.locator("#error-line").inner_text()
        raise AssertionError(
            f"timed out waiting for {expression!r}: body {state}; status {status!r}; "
            f"error {errors!r}\npage log:\n{log}"
        ) from exc
