"""relay/client_leg.py's DirectLeg, through the gateway as `voicegw serve` runs it: pings,
fragmented messages, the close code each protocol violation and closing handshake from the
client is answered with, a client that never answers the close, uvicorn's keepalive through
the leg, and the server shutting down under a live session. Every session's upstream
connection must close with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import CONNECTING, OPEN
from websockets.uri import parse_uri

from pipelines.contracts import load_settings
from simulators.openai_realtime import RealtimeSimulator, silence
from voicegw.serve import running_gateway

from .conftest import Relay, b64

TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def direct_gateway(env: dict[str, str], **options: Any) -> AsyncIterator[Relay]:
    """The gateway on `voicegw serve`'s server options (the direct leg), plus `options`."""
    async with running_gateway(load_settings(env), **options) as served:
        yield Relay(served.server)


@pytest.fixture
async def direct(relay_env: dict[str, str]) -> AsyncIterator[Relay]:
    async with direct_gateway(relay_env) as relay:
        yield relay


async def until(ws: ClientConnection, type_: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] == type_:
                return frame


@contextlib.asynccontextmanager
async def client(relay: Relay) -> AsyncIterator[ClientConnection]:
    """A websockets client in a running session (upstream connected, frames flowing)."""
    ticket = await relay.ticket()
    async with connect(
        f"{relay.server.ws_url}/v1/realtime",
        additional_headers={"Authorization": f"Bearer {ticket}"},
        compression=None,
    ) as ws:
        await until(ws, "session.updated")
        yield ws


class RawClient:
    """A client connection driven by hand: websockets' sans-I/O ClientProtocol makes the
    handshake and reads what the relay sends; the test writes whatever bytes it likes."""

    def __init__(
        self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        self.reader = reader
        self.writer = writer
        self.frames: list[Frame] = []

    async def handshake(self, ticket: str) -> None:
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {ticket}"
        self.protocol.send_request(request)
        self.answer()
        await self.until(lambda: self.protocol.state is not CONNECTING)
        assert self.protocol.state is OPEN, self.protocol.handshake_exc

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def answer(self) -> None:
        """Send what the protocol has queued (the request, pongs)."""
        self.write(b"".join(self.protocol.data_to_send()))

    async def read(self) -> bool:
        """Take in the relay's next bytes; False at the end of the connection."""
        data = await self.reader.read(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self.frames += [e for e in self.protocol.events_received() if isinstance(e, Frame)]
        return bool(data)

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while not done():
                assert await self.read(), "the relay closed the connection"

    async def until_event(self, type_: str) -> None:
        def seen() -> bool:
            return any(
                f.opcode is Opcode.TEXT and json.loads(bytes(f.data))["type"] == type_
                for f in self.frames
            )

        await self.until(seen)

    async def close_code(self) -> int | None:
        """Read to the end of the connection; the code of the relay's close frame."""
        async with asyncio.timeout(TIMEOUT_S):
            while await self.read():
                pass
        close = self.protocol.close_rcvd
        return close.code if close is not None else None


@contextlib.asynccontextmanager
async def raw_client(relay: Relay) -> AsyncIterator[RawClient]:
    """A RawClient in a running session (the relay's session.updated has arrived)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
    raw = RawClient(f"{relay.server.ws_url}/v1/realtime", reader, writer)
    try:
        await raw.handshake(await relay.ticket())
        await raw.until_event("session.updated")
        yield raw
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def upstreams_closed(realtime: RealtimeSimulator, sessions: int = 1) -> None:
    """Each session opened its upstream connection, and all of them have closed."""
    assert realtime.connections == sessions
    await realtime.wait_for(lambda: realtime.open_connections == 0, within=TIMEOUT_S)


async def test_client_ping_gets_a_pong(direct: Relay) -> None:
    async with client(direct) as ws, asyncio.timeout(TIMEOUT_S):
        await (await ws.ping(b"direct"))


def text_item(text: str) -> str:
    content = [{"type": "input_text", "text": text}]
    item = {"type": "message", "role": "user", "content": content}
    return json.dumps({"type": "conversation.item.create", "item": item})


FRAGMENTED = [
    text_item("in three fragments " * 100),
    json.dumps({"type": "input_audio_buffer.append", "audio": b64(silence(100))}),
]


async def test_fragmented_messages_are_reassembled(
    direct: Relay, realtime: RealtimeSimulator
) -> None:
    async with client(direct) as ws:
        for event in FRAGMENTED:
            await ws.send([event[:20], event[20:1500], event[1500:]])
        await realtime.wait_for(lambda: len(realtime.received) == 1 + len(FRAGMENTED))
    assert realtime.received[0]["type"] == "session.update"  # the relay's own
    assert realtime.received[1:] == [json.loads(event) for event in FRAGMENTED]


def masked(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=True)


MASK_KEY = b"\x01\x02\x03\x04"

# What a client sends in a running session -> the close code the relay answers with.
VIOLATIONS = {
    "unmasked": (Frame(Opcode.TEXT, b"{}").serialize(mask=False), 1002),
    "reserved bit": (bytes((0xC1, 0x80)) + MASK_KEY, 1002),
    "continuation first": (masked(Opcode.CONT, b"{}"), 1002),
    "ping of 126 bytes": (bytes((0x89, 0xFE, 0, 126)) + MASK_KEY + bytes(126), 1002),
    "opcode 3": (bytes((0x83, 0x80)) + MASK_KEY, 1002),
    "invalid UTF-8": (masked(Opcode.TEXT, b'{"type": "\xff"}'), 1007),
    "1 GiB announced": (bytes((0x82, 0xFF)) + (1 << 30).to_bytes(8, "big") + MASK_KEY, 1009),
    "close code 999": (masked(Opcode.CLOSE, (999).to_bytes(2, "big")), 1002),
    "close of 1 byte": (masked(Opcode.CLOSE, b"\x03"), 1002),
    "close reason not UTF-8": (masked(Opcode.CLOSE, b"\x03\xe8\xff"), 1007),
}
CLOSINGS = {
    "no code": (masked(Opcode.CLOSE, b""), 1000),
    "1000": (masked(Opcode.CLOSE, b"\x03\xe8"), 1000),
    "4000": (masked(Opcode.CLOSE, b"\x0f\xa0bye"), 4000),
}


async def answers(relay: Relay, cases: dict[str, tuple[bytes, int]]) -> dict[str, int | None]:
    """Each case in a session of its own: the close code the relay answered it with."""
    codes: dict[str, int | None] = {}
    for name, (data, _) in cases.items():
        async with raw_client(relay) as raw:
            raw.write(data)
            codes[name] = await raw.close_code()
    return codes


async def test_protocol_violations_close_the_session(
    direct: Relay, realtime: RealtimeSimulator
) -> None:
    assert await answers(direct, VIOLATIONS) == {name: c for name, (_, c) in VIOLATIONS.items()}
    await upstreams_closed(realtime, sessions=len(VIOLATIONS))


async def test_closing_handshake_is_answered(direct: Relay, realtime: RealtimeSimulator) -> None:
    assert await answers(direct, CLOSINGS) == {name: c for name, (_, c) in CLOSINGS.items()}
    await upstreams_closed(realtime, sessions=len(CLOSINGS))


async def test_client_that_never_answers_the_close_is_cut_off(
    relay_env: dict[str, str], realtime: RealtimeSimulator
) -> None:
    env = {**relay_env, "RELAY_MAX_SESSION_SECONDS": "0.2"}
    async with direct_gateway(env) as relay, raw_client(relay) as raw:
        assert await raw.close_code() == 1000  # read to the end, never answering
    await upstreams_closed(realtime)


async def test_uvicorn_keepalive_sees_the_pongs(
    relay_env: dict[str, str], realtime: RealtimeSimulator
) -> None:
    # With a ping timeout, uvicorn sends its next ping only once the last one was answered:
    # a third ping means two pongs reached it through the direct leg.
    options = {"ws_ping_interval": 0.02, "ws_ping_timeout": 2.0}
    async with direct_gateway(relay_env, **options) as relay, raw_client(relay) as raw:

        def pings() -> int:
            raw.answer()
            return sum(f.opcode is Opcode.PING for f in raw.frames)

        await raw.until(lambda: pings() >= 3)
        assert raw.protocol.close_rcvd is None
    await upstreams_closed(realtime)


async def test_server_shutdown_closes_1012(
    relay_env: dict[str, str], realtime: RealtimeSimulator
) -> None:
    async with contextlib.AsyncExitStack() as outlives_the_server:
        async with direct_gateway(relay_env) as relay:
            ws = await outlives_the_server.enter_async_context(client(relay))
        await upstreams_closed(realtime)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


async def test_deflated_connections_take_the_asgi_leg(
    relay_env: dict[str, str], realtime: RealtimeSimulator
) -> None:
    """On a server run with per-message deflate, a client that negotiates it is relayed by the
    ASGI leg (the direct leg reads no extension and would refuse its compressed frames)."""
    async with direct_gateway(relay_env, ws_per_message_deflate=True) as relay:
        ticket = await relay.ticket()
        async with connect(
            f"{relay.server.ws_url}/v1/realtime",
            additional_headers={"Authorization": f"Bearer {ticket}"},
            compression="deflate",
        ) as ws:
            assert ws.response is not None
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await until(ws, "session.updated")
            await ws.send(text_item("compressed " * 50))
            await realtime.wait_for(lambda: len(realtime.received) == 2)
    assert realtime.received[1] == json.loads(text_item("compressed " * 50))
