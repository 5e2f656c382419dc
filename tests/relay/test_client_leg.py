"""relay/client_leg.py's DirectLeg, through the gateway as `voicegw serve` runs it: pings,
fragmented messages, the close code each protocol violation and closing handshake from the
client is answered with, a client that never answers the close, uvicorn's keepalive through
the leg, and the server shutting down under a live session. Every session's upstream
connection must close with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import CONNECTING, OPEN
from websockets.uri import parse_uri

from pipelines.contracts import load_settings
from relay import session as relay_session
from simulators.openai_realtime import RealtimeSimulator, silence
from voicegw.serve import ServedGateway, running_gateway

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


# -- clients that do not read ----------------------------------------------------------------


def masked_frame(opcode: int, payload: bytes = b"") -> bytes:
    return Frame(Opcode(opcode), payload).serialize(mask=True)


FLOODS = {
    "empty binary": masked_frame(0x2),
    "ping": masked_frame(0x9, bytes(125)),
    "pong": masked_frame(0xA, bytes(125)),
    "text": masked_frame(0x1, b'{"type":"input_audio_buffer.clear"}'),
}
_BUFFER_BOUND = 512 * 1024  # far above one burst of error replies, far below an unbounded pile


async def never_reading_client(relay: Relay) -> socket.socket:
    """A raw WebSocket client with a tiny receive buffer, in a running session: it reads the
    handshake's answer (byte by byte, so no frame) and never another byte."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", relay.server.port))
    request = (
        "GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {await relay.ticket()}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    async with asyncio.timeout(TIMEOUT_S):
        while not head.endswith(b"\r\n\r\n"):
            head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def held_by_server(served: ServedGateway, peer: tuple[str, int]) -> list[Any]:
    """The server's protocol objects still holding the connection from `peer`."""
    connections = served.server.server.server_state.connections
    return [c for c in connections if getattr(c, "client", None) == peer]


@pytest.mark.parametrize("frame", list(FLOODS))
async def test_a_client_that_never_reads_is_cut_off_and_its_memory_freed(
    relay_env: dict[str, str], realtime: RealtimeSimulator, frame: str
) -> None:
    """Issue 17.1: frames as fast as the socket takes them from a client that reads nothing.
    Every frame type counts against the message rate; what the relay writes to the client
    stays bounded; and once the session is over the socket is gone, though the client never
    reads the close (nor anything else)."""
    env = {**relay_env, "RELAY_CLIENT_STALL_SECONDS": "0.5"}
    loop = asyncio.get_running_loop()
    active = REGISTRY.get_sample_value("voicegw_relay_sessions_active") or 0.0
    async with running_gateway(load_settings(env)) as served:
        sock = await never_reading_client(Relay(served.server))
        peer = sock.getsockname()
        burst = FLOODS[frame] * 2000
        buffered = 0
        deadline = loop.time() + 8
        try:
            while held_by_server(served, peer) and loop.time() < deadline:
                for protocol in held_by_server(served, peer):
                    buffered = max(buffered, protocol.transport.get_write_buffer_size())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(loop.sock_sendall(sock, burst), 0.05)
        except ConnectionError:  # the server cut the connection under our writes
            pass
        finally:
            sock.close()
        assert not held_by_server(served, peer)
        assert buffered < _BUFFER_BOUND
        await upstreams_closed(realtime)
        # The session ends once its close returns; a metric has no event to wait on.
        async with asyncio.timeout(TIMEOUT_S):
            while REGISTRY.get_sample_value("voicegw_relay_sessions_active") != active:  # noqa: ASYNC110
                await asyncio.sleep(0.01)


async def test_the_frame_size_limit_is_the_relays_own(
    relay_env: dict[str, str], realtime: RealtimeSimulator
) -> None:
    """Issue 17.10: a frame over RELAY_MAX_FRAME_BYTES (64 KiB here) is refused when its header
    announces it, with the relay's own voice.error and 1009, not after up to uvicorn's
    ws_max_size is buffered."""
    async with direct_gateway(relay_env) as relay, raw_client(relay) as raw:
        raw.write(bytes((0x81, 0xFF)) + (100 * 1024).to_bytes(8, "big") + MASK_KEY)
        raw.write(bytes(1024))  # a start of the payload, which is never read
        assert await raw.close_code() == 1009
        errors = [
            json.loads(bytes(f.data))
            for f in raw.frames
            if f.opcode is Opcode.TEXT and json.loads(bytes(f.data))["type"] == "voice.error"
        ]
    assert [e["code"] for e in errors] == ["frame_too_large"]
    await upstreams_closed(realtime)


async def test_a_client_flooding_on_past_the_close_is_cut_off_at_once(
    direct: Relay, realtime: RealtimeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17.1, as bench/soak.py found it: a flood trips the message rate and the relay's
    close frame goes out, but a client that goes on sending instead of answering must not be
    read until the close timeout (the server parsed at the loopback's speed for that second, a
    core per attacker). Past what a closing client could have had in flight it is cut off, so
    all it gets to send is what the two sockets' buffers hold (about 6 MB here), however long
    the close timeout (made 5 s here, so reading on until it would take far more)."""
    monkeypatch.setattr(relay_session, "CLIENT_CLOSE_TIMEOUT_S", 5.0)
    loop = asyncio.get_running_loop()
    sock = await never_reading_client(direct)
    burst = FLOODS["empty binary"] * 2000
    sent = 0
    try:
        async with asyncio.timeout(3 * TIMEOUT_S):
            while True:
                await loop.sock_sendall(sock, burst)
                sent += len(burst)
    except ConnectionError:
        pass
    finally:
        sock.close()
    assert sent < 24 * 1024 * 1024
    await upstreams_closed(realtime)


async def test_a_burst_over_the_rate_is_not_parsed_past_it(
    direct: Relay, realtime: RealtimeSimulator
) -> None:
    """Issue 17.1, as bench/soak.py found it: 4,000 pings in one write. The session ends at
    the message rate (1008), and the relay parses (and answers) at most one batch of frames past
    that, not the whole read: a read of tiny frames is tens of thousands of them, tens of
    milliseconds of the event loop per read, which every other session waited for."""
    async with raw_client(direct) as raw:
        raw.write(FLOODS["ping"] * 4000)
        with contextlib.suppress(ConnectionResetError):  # cut off: it never answers the close
            await raw.close_code()
    pongs = sum(frame.opcode is Opcode.PONG for frame in raw.frames)
    assert 200 < pongs <= 300  # over the rate, within one batch (256); a read is ~500 here
    await upstreams_closed(realtime)
