"""livekit mode as a meeting runs it, for the end-to-end tests and bench/livekit_room.py: the
gateway, the simulated providers and the LiveKit stand-in (`voicegw.simulate`, the wiring
`voicegw serve --simulate` runs), real `voicegw agent` worker processes, and real clients: the
meeting page in Debian Chromium, or the Python rtc SDK.

WebRTC needs an interface that is not loopback (libwebrtc ignores it), so all of it runs in a
network namespace of the test's own (`tests/netns.py`): the servers on an event loop whose
thread is born inside it (`BackgroundLoop`), the worker and participant processes started from
that thread, Chromium through `ip netns exec`. Signalling and HTTP use the namespace's own
127.0.0.1, as under `make run`; media flows over its veth address. Nothing leaves it.

The tests are synchronous (Playwright's sync API); they read and change server state on the
loop's thread (`RoomStack.call`, `.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from livekit.protocol.models import DisconnectReason
from playwright.sync_api import Page

from pipelines.contracts import DispatchMetadata, Settings, load_settings
from simulators.deepgram import DeepgramSimulator
from simulators.groq import GroqSimulator, ToolRule
from simulators.livekit_server import LiveKitServer
from simulators.livekit_server.rooms import Room
from simulators.n8n import N8nSimulator
from simulators.openai_realtime import RealtimeSimulator
from tests.browser.conftest import (
    BackgroundLoop,
    PageLog,
    SpokenInput,
    spoken_input_from,
    wait_for,
)
from tests.netns import NetNamespace
from tests.simulators.livekit_server.conftest import RtcParticipant
from voicegw.serve import ServedGateway, running_gateway
from voicegw.simulate import SimulatedLiveKit, SimulatedStack, simulated_livekit, simulated_stack

_T = TypeVar("_T")

LIVEKIT_KEY = "APIe2eroomkey"
LIVEKIT_SECRET = "e2e-room-livekit-secret-" * 2
GATEWAY_API_KEY = "e2e-room-gateway-api-key"
# What the user says, what Deepgram's stand-in transcribes it as, and what the LLM's stand-in
# makes of it: a send_email call, then a spoken "(simulated) Done. ..." reply.
QUESTION = "Please send an email to Ann about the launch plan."
EMAIL = {"to": "ann@example.com", "subject": "Launch plan", "body": "The plan is ready."}
ROOM_ENV = {
    "GATEWAY_SECRET": "e2e-room-gateway-secret-" * 2,
    "GATEWAY_API_KEY": GATEWAY_API_KEY,
    "LIVEKIT_API_KEY": LIVEKIT_KEY,
    "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
    # espeak's comma pause must not end the openai-mode turn early (the fallback's turn).
    "OPENAI_VAD_SILENCE_MS": "700",
}


def spoken_question(directory: Path, rate: int = 48_000) -> SpokenInput:
    """QUESTION spoken by espeak-ng at `rate` (mono 16-bit), 1.5 s of silence before it (the
    agent subscribes to a microphone track a moment after it is published) and 2.5 s after it,
    so the VADs see it end."""
    raw = directory / "question-raw.wav"
    path = directory / f"question-{rate}.wav"
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(raw), QUESTION], check=True)
    subprocess.run(
        ["sox", str(raw), "-b", "16", "-c", "1", "-r", str(rate), str(path), "pad", "1.5", "2.5"],
        check=True,
    )
    return spoken_input_from(path)


def scripted_providers() -> dict[str, Any]:
    """Every utterance is QUESTION; a user turn that mentions an email calls send_email."""
    return {
        "deepgram": DeepgramSimulator(transcripts=[QUESTION] * 200, record_audio=True),
        "groq": GroqSimulator(rules=[ToolRule("email", "send_email", EMAIL)]),
        "realtime": RealtimeSimulator(),
        "n8n": N8nSimulator(),
    }


@dataclass
class RoomStack:
    """Everything of one namespace's livekit path, served on `loop`."""

    loop: BackgroundLoop
    netns: NetNamespace
    simulated: SimulatedStack
    livekit: SimulatedLiveKit
    gateway: ServedGateway
    stop: Callable[[], None]  # stops the stand-in and its workers (the stack stays)

    @property
    def server(self) -> LiveKitServer:
        return self.livekit.server

    @property
    def settings(self) -> Settings:
        return self.livekit.settings

    @property
    def url(self) -> str:
        return self.gateway.url

    def call(self, fn: Callable[[], _T]) -> _T:
        """`fn()` on the servers' thread (their state belongs to it)."""
        return self.loop.call(fn)

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return self.loop.run(coro, timeout)

    def launch(self, session_id: str, mode: str = "livekit") -> str:
        """The page URL `POST /v1/launch` returns (what Recall.ai would open)."""

        async def launch() -> str:
            async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
                response = await client.post(
                    "/v1/launch",
                    json={"session_id": session_id, "mode": mode},
                    headers={"Authorization": f"Bearer {GATEWAY_API_KEY}"},
                )
            assert response.status_code == 201, response.text
            # The launcher names GATEWAY_PUBLIC_URL, set before the free port was known.
            query = response.json()["page_url"].split("?", 1)[1]
            return f"{self.url}/?{query}"

        result: str = self.run(launch())
        return result

    def session(self, session_id: str, mode: str = "livekit") -> dict[str, Any]:
        """`GET /v1/session` as the page asks it (dev: by session id)."""

        async def get() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
                response = await client.get(
                    "/v1/session", params={"session_id": session_id, "mode": mode}
                )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        result: dict[str, Any] = self.run(get())
        return result

    def fallbacks_reported(self) -> int:
        """Fallback reports the gateway counted (a session's first, as its admin view says)."""

        async def counted() -> int:
            overview = await self.gateway.gateway.router.overview()
            reported: int = overview.counts.fallbacks_reported
            return reported

        result: int = self.run(counted())
        return result

    def room(self, session_id: str) -> Room | None:
        return self.call(lambda: self.server.rooms.rooms.get(f"meeting_{session_id}"))

    def close_room(self, session_id: str) -> None:
        """End a session's room as a meeting's end does: its agent's job ends with it."""

        async def close() -> None:
            room = self.server.rooms.rooms.get(f"meeting_{session_id}")
            if room is not None:
                await self.server.rooms.close_room(room, DisconnectReason.ROOM_DELETED)

        self.run(close())

    def token_dispatch(self, session_id: str) -> DispatchMetadata:
        """The metadata of the dispatch of our agent in the session's room."""
        room = self.room(session_id)
        assert room is not None, f"no room for {session_id}"
        ours = [d for d in room.dispatches.values() if d.agent_name == "voice-agent"]
        assert len(ours) == 1, ours
        return DispatchMetadata.model_validate_json(ours[0].metadata)

    def heard(self, since: int) -> np.ndarray[Any, np.dtype[np.int16]]:
        """The audio the simulated Deepgram got on the streams opened since the `since`th."""
        chunks = self.call(
            lambda: [bytes(c.audio) for c in self.simulated.providers.deepgram.connections[since:]]
        )
        return np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.int16)

    def deepgram_rate(self, since: int) -> int:
        rates = self.call(
            lambda: {
                int(c.params["sample_rate"])
                for c in self.simulated.providers.deepgram.connections[since:]
            }
        )
        assert len(rates) == 1, rates
        return rates.pop()

    def streams(self) -> int:
        return self.call(lambda: len(self.simulated.providers.deepgram.connections))

    def wait(self, condition: Callable[[], bool], within: float, what: str) -> None:
        """Wait (polling server state on its thread) until `condition()` holds."""
        deadline = time.monotonic() + within
        while not self.call(condition):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            time.sleep(0.05)


@contextlib.contextmanager
def room_stack(
    netns: NetNamespace,
    *,
    server_options: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    profile: str = "instant",
    providers: dict[str, Any] | None = None,
    **livekit: Any,
) -> Iterator[RoomStack]:
    """A RoomStack in `netns` until the block ends. `server_options` configure the stand-in
    (`LiveKitServer`), `env` adds to the gateway's and workers' settings, `profile` is the
    simulators' latency profile, `providers` the simulators to serve (default: scripted for
    QUESTION), `livekit` goes to `simulated_livekit` (workers, agent_mode, supervise
    options)."""
    with netns.entered():
        loop = BackgroundLoop()  # its thread, and all it starts, live in the namespace
    exits = contextlib.AsyncExitStack()
    try:

        async def start() -> RoomStack:
            settings = load_settings({**ROOM_ENV, **(env or {})})
            simulated = await exits.enter_async_context(
                simulated_stack(
                    settings,
                    profile,
                    **(scripted_providers() if providers is None else providers),
                )
            )
            server = LiveKitServer({LIVEKIT_KEY: LIVEKIT_SECRET}, **(server_options or {}))
            livekit_exits = contextlib.AsyncExitStack()
            exits.push_async_callback(livekit_exits.aclose)
            room = await livekit_exits.enter_async_context(
                simulated_livekit(
                    simulated.settings,
                    worker_env={**simulated.providers.env, **(env or {})},
                    server=server,
                    **livekit,
                )
            )
            gateway = await exits.enter_async_context(running_gateway(room.settings))

            def stop() -> None:
                loop.run(livekit_exits.aclose())

            return RoomStack(loop, netns, simulated, room, gateway, stop)

        yield loop.run(start(), timeout=60)
    finally:
        loop.run(exits.aclose(), timeout=60)
        leaked = loop.run(_pending_tasks())
        loop.close()
        assert not leaked, f"the servers left asyncio tasks behind: {leaked}"


async def _pending_tasks() -> list[str]:
    await asyncio.sleep(0.1)  # let closing sockets finish
    current = asyncio.current_task()
    return [repr(t.get_coro()) for t in asyncio.all_tasks() if t is not current and not t.done()]


def wait_for_registered(stack: RoomStack, count: int = 1, within: float = 60) -> None:
    stack.wait(
        lambda: len(stack.server.agents.workers) >= count,
        within,
        f"{count} agent worker(s) to register",
    )


# -- the Python rtc SDK as the page ---------------------------------------------------------


@contextlib.asynccontextmanager
async def rtc_page(stack: RoomStack, session_id: str) -> AsyncIterator[RtcParticipant]:
    """A Python rtc participant joining with the token the gateway issues for the page (on
    the servers' loop, so the process is born in the namespace)."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        response = await client.get(
            "/v1/session", params={"session_id": session_id, "mode": "livekit"}
        )
    config = response.json()
    assert config["mode"] == "livekit", config
    livekit = config["livekit"]
    async with RtcParticipant.start(livekit["url"], livekit["token"], f"page-{session_id}") as page:
        yield page


def state_messages(participant: RtcParticipant) -> list[dict[str, Any]]:
    """The `voice.state` messages the participant received, in order."""
    return [
        json.loads(e["payload"])
        for e in participant.events
        if e["event"] == "data" and e["topic"] == "voice.state"
    ]


# -- the meeting page -------------------------------------------------------------------------

# The agent's answer to QUESTION is on the page (after the tool call) and it listens again.
ANSWERED = (
    "window.voicePage && window.voicePage.transcript.some(l => l.role === 'assistant'"
    " && l.final && l.text.startsWith('(simulated) Done.'))"
    " && document.body.dataset.state === 'listening'"
)


def speak_when_the_agent_is_there(page: Page, log: PageLog) -> None:
    """Wait until the page sees an agent in its room, then let its microphone open."""
    wait_for(page, "document.body.dataset.phase === 'connected'", timeout_s=60, log=log)
    page.evaluate("window.__e2e.openMic()")


def page_messages(page: Page) -> list[dict[str, Any]]:
    """Every state message the page's voice client emitted (the probe keeps them)."""
    messages: list[dict[str, Any]] = page.evaluate("window.__e2e.messages")
    return messages


def audible_seconds(page: Page) -> float:
    """Seconds of audible samples in what the page played from remote tracks."""
    probe: dict[str, float] = page.evaluate("({...window.__e2e})")
    return probe["audible"] / probe["rate"] if probe["rate"] else 0.0


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(item in remaining for item in wanted)
