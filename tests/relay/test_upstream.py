"""relay/upstream.py against real servers on 127.0.0.1: the handshake (path, query, bearer key),
events held until `start()`, echo, ping/pong, closing from either side, the size bound,
backpressure, what a misbehaving server's frames are answered with, and handshake failures
that never leak the key or the query."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from relay.upstream import Upstream, UpstreamError
from relay.wire import accept_value

KEY = "sk-test"
PATH = "/v1/realtime?model=x"
TIMEOUT_S = 2.0

T = TypeVar("T")


class Sink:
    """Records what the upstream leg reports, for tests to await."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.pressure: asyncio.Queue[bool] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.unresponsive = asyncio.Event()

    def on_upstream_message(self, payload: bytes) -> None:
        self.messages.put_nowait(payload)

    def on_upstream_closed(self) -> None:
        self.closed.set()

    def on_upstream_backpressure(self, paused: bool) -> None:
        self.pressure.put_nowait(paused)

    def on_upstream_unresponsive(self) -> None:
        self.unresponsive.set()

    async def next_message(self) -> bytes:
        async with asyncio.timeout(TIMEOUT_S):
            return await self.messages.get()

    async def wait_closed(self) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            await self.closed.wait()


async def open_upstream(url: str, sink: Sink, *, max_size: int = 1 << 20) -> Upstream:
    return await Upstream.connect(
        url,
        sink=sink,
        headers={"Authorization": f"Bearer {KEY}"},
        max_size=max_size,
        open_timeout_s=TIMEOUT_S,
    )


async def within(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(TIMEOUT_S):
        return await awaitable


# -- a well-behaved server --------------------------------------------------------------------

Behaviour = Callable[[ServerConnection], Awaitable[None]]


@dataclass
class Seen:
    """What the server saw of the one connection it served."""

    request: asyncio.Future[Request] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    close_code: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@contextlib.asynccontextmanager
async def ws_server(behave: Behaviour) -> AsyncIterator[tuple[str, Seen]]:
    """A websockets server that runs `behave` on its connection, then waits for the close."""
    seen = Seen()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.request.set_result(ws.request)
        try:
            await behave(ws)
            await ws.wait_closed()
        finally:
            seen.close_code.set_result(ws.close_code)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}{PATH}", seen


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def test_handshake_echo_and_close() -> None:
    sink = Sink()
    async with ws_server(echo) as (url, seen):
        upstream = await open_upstream(url, sink)
        upstream.start()
        upstream.send_text("héllo".encode())
        assert await sink.next_message() == "héllo".encode()
        await upstream.aclose(0.5)
        assert await within(seen.close_code) == 1000
        assert sink.closed.is_set()
        request = await within(seen.request)
    assert request.path == PATH
    assert request.headers["Authorization"] == f"Bearer {KEY}"


async def test_events_are_held_until_start() -> None:
    sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    heard: asyncio.Future[str | bytes] = asyncio.get_running_loop().create_future()

    async def answer_then_listen(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"type":"session.updated"}')
        sent.set_result(None)
        heard.set_result(await ws.recv())

    sink = Sink()
    async with ws_server(answer_then_listen) as (url, _):
        upstream = await open_upstream(url, sink)
        upstream.send_text(b'{"type":"session.update"}')  # writing works while held
        await within(sent)
        upstream.send_text(b'{"type":"input_audio_buffer.clear"}')
        assert await within(heard) == '{"type":"input_audio_buffer.clear"}'
        # The event has been in our socket's buffer for a whole round trip, unread.
        assert sink.messages.empty()
        upstream.start()
        assert await sink.next_message() == b'{"type":"session.updated"}'
        await upstream.aclose(0.5)


async def test_server_ping_gets_a_pong() -> None:
    ponged: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def ping(ws: ServerConnection) -> None:
        waiter = await ws.ping(b"are you there")
        ponged.set_result(await waiter)

    async with ws_server(ping) as (url, _):
        upstream = await open_upstream(url, Sink())
        upstream.start()
        await within(ponged)
        await upstream.aclose(0.5)


@pytest.mark.parametrize("code", [1000, 4000])
async def test_server_closing_is_reported_and_answered(code: int) -> None:
    async def close(ws: ServerConnection) -> None:
        await ws.close(code, "bye")

    sink = Sink()
    async with ws_server(close) as (url, seen):
        upstream = await open_upstream(url, sink)
        upstream.start()
        await sink.wait_closed()
        assert await within(seen.close_code) == code  # our answer echoes the code
        await upstream.aclose(0.5)  # already closed: returns at once


async def test_message_over_max_size_closes_1009() -> None:
    async def too_big(ws: ServerConnection) -> None:
        await ws.send("x" * 4096)

    sink = Sink()
    async with ws_server(too_big) as (url, seen):
        upstream = await open_upstream(url, sink, max_size=1024)
        upstream.start()
        await sink.wait_closed()
        assert await within(seen.close_code) == 1009
    assert sink.messages.empty()


async def test_backpressure_is_reported_both_ways() -> None:
    drain = asyncio.Event()

    async def read_when_told(ws: ServerConnection) -> None:
        await drain.wait()
        async for _ in ws:
            pass

    sink = Sink()
    async with ws_server(read_when_told) as (url, _):
        upstream = await open_upstream(url, sink, max_size=1 << 20)
        upstream.start()
        chunk = b"x" * 65536
        for _ in range(2000):  # at most 128 MiB; the socket buffers hold a few
            if not sink.pressure.empty():
                break
            upstream.send_text(chunk)
        assert sink.pressure.get_nowait() is True
        drain.set()
        assert await within(sink.pressure.get()) is False
        await upstream.aclose(TIMEOUT_S)


async def test_connection_lost_is_reported() -> None:
    async def drop(ws: ServerConnection) -> None:
        ws.transport.abort()  # no closing handshake

    sink = Sink()
    async with ws_server(drop) as (url, _):
        upstream = await open_upstream(url, sink)
        upstream.start()
        await sink.wait_closed()


# -- a raw server: misbehaviour and handshake failures ---------------------------------------

Answer = Callable[[bytes], bytes | None]


@dataclass
class RawSeen:
    """What a raw TCP server saw: the request head, and once the client hung up, all it
    sent after that head."""

    request: asyncio.Future[bytes] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    hung_up: asyncio.Future[bytes] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@contextlib.asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[tuple[str, RawSeen]]:
    """A TCP server that reads the request head, writes `answer(head)` and waits for the
    client to hang up; an answer of None says nothing, b"" hangs up at once."""
    seen = RawSeen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = b""
        with contextlib.suppress(ConnectionError):
            head = await reader.readuntil(b"\r\n\r\n")
            seen.request.set_result(head)
            reply = answer(head)
            if reply is not None:
                writer.write(reply)
            while reply != b"" and (chunk := await reader.read(65536)):
                received += chunk
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        seen.hung_up.set_result(received)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}{PATH}", seen


def switching(head: bytes, accept: str | None = None, extra: str = "") -> bytes:
    """A 101 answer to `head`, with the right Sec-WebSocket-Accept unless `accept` is given."""
    line = next(x for x in head.split(b"\r\n") if x.lower().startswith(b"sec-websocket-key:"))
    key = line.split(b":", 1)[1].strip().decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept or accept_value(key)}\r\n{extra}\r\n"
    ).encode()


def close_code_in(sent: bytes) -> int | None:
    """The code of the close frame in what a client sent, as websockets reads it."""
    server = ServerProtocol(state=OPEN)
    server.receive_data(sent)
    server.events_received()
    return server.close_rcvd.code if server.close_rcvd is not None else None


async def test_events_sent_with_the_handshake_wait_for_start() -> None:
    event = Frame(Opcode.TEXT, b'{"type":"session.created"}').serialize(mask=False)
    sink = Sink()
    async with raw_server(lambda head: switching(head) + event) as (url, seen):
        upstream = await open_upstream(url, sink)
        assert sink.messages.empty()
        upstream.start()
        assert await sink.next_message() == b'{"type":"session.created"}'
        await upstream.aclose(0.1)  # the server never answers: given up after 0.1 s
        assert close_code_in(await within(seen.hung_up)) == 1000
    assert sink.closed.is_set()


def unmasked(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=False)


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        pytest.param(Frame(Opcode.TEXT, b"{}").serialize(mask=True), 1002, id="masked"),
        pytest.param(bytes((0xC1, 0)), 1002, id="reserved-bit"),
        pytest.param(unmasked(Opcode.CLOSE, (999).to_bytes(2, "big")), 1002, id="close-999"),
        pytest.param(unmasked(Opcode.CLOSE, b"\x03\xe8\xff"), 1007, id="close-not-utf8"),
        pytest.param(unmasked(Opcode.CLOSE, b""), 1000, id="close-no-code"),
        pytest.param(unmasked(Opcode.CLOSE, b"\x0f\xa0"), 4000, id="close-4000"),
    ],
)
async def test_server_frame_is_answered_with_close_code(sent: bytes, code: int) -> None:
    sink = Sink()
    async with raw_server(lambda head: switching(head) + sent) as (url, seen):
        upstream = await open_upstream(url, sink)
        upstream.start()
        await sink.wait_closed()
        assert close_code_in(await within(seen.hung_up)) == code
    assert sink.messages.empty()


async def refusal(answer: Answer) -> str:
    """Connect to a server answering `answer`; the UpstreamError's text, once the server has
    seen the connection closed."""
    async with raw_server(answer) as (url, seen):
        with pytest.raises(UpstreamError) as error:
            await open_upstream(url, Sink())
        await within(seen.hung_up)
    return str(error.value)


async def test_unauthorized_is_refused_without_the_key_or_query() -> None:
    why = await refusal(lambda _: b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    assert "401" in why
    assert KEY not in why and "model=x" not in why


async def test_request_carries_target_host_and_key() -> None:
    async with raw_server(lambda _: b"HTTP/1.1 403 Forbidden\r\n\r\n") as (url, seen):
        with pytest.raises(UpstreamError):
            await open_upstream(url, Sink())
        head = (await within(seen.request)).decode()
        await within(seen.hung_up)
    assert head.startswith(f"GET {PATH} HTTP/1.1\r\n")
    lines = head.lower().split("\r\n")
    assert f"host: 127.0.0.1:{urlsplit(url).port}" in lines
    assert f"authorization: bearer {KEY}" in lines and "sec-websocket-version: 13" in lines


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            lambda head: switching(head, accept="s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), id="accept"
        ),
        pytest.param(
            lambda head: switching(head, extra="Sec-WebSocket-Extensions: x\r\n"), id="ext"
        ),
        pytest.param(lambda _: b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="no-upgrade"),
        pytest.param(lambda _: b"SSH-2.0-OpenSSH\r\n\r\n", id="not-http"),
        pytest.param(lambda _: b"", id="hangs-up"),
    ],
)
async def test_bad_handshake_answers_are_refused(answer: Answer) -> None:
    why = await refusal(answer)
    assert KEY not in why and "model=x" not in why


async def test_silent_server_times_out() -> None:
    async with raw_server(lambda _: None) as (url, seen), asyncio.timeout(TIMEOUT_S):
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await Upstream.connect(url, sink=Sink(), headers={}, max_size=1024, open_timeout_s=0.3)
        assert asyncio.get_running_loop().time() - started >= 0.29
        await seen.hung_up


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/v1/realtime?key=sk-test", "ws:///v1/realtime", "127.0.0.1:9"]
)
async def test_url_that_is_not_a_websocket_url(url: str) -> None:
    with pytest.raises(UpstreamError) as error:
        await open_upstream(url, Sink())
    assert KEY not in str(error.value)


# -- keepalive ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def pinged_server(answer_pings: bool) -> AsyncIterator[tuple[str, asyncio.Queue[bytes]]]:
    """A WebSocket server that reports each ping it reads, and answers it only if told to
    (else it reads on but is otherwise as good as frozen)."""
    pings: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            writer.write(switching(await reader.readuntil(b"\r\n\r\n")))
            protocol = ServerProtocol(state=OPEN)
            while chunk := await reader.read(65536):
                protocol.receive_data(chunk)
                for event in protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.PING:
                        pings.put_nowait(bytes(event.data))
                if answer_pings:
                    writer.write(b"".join(protocol.data_to_send()))  # its pongs
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}{PATH}", pings


async def test_keepalive_pings_are_answered() -> None:
    sink = Sink()
    async with pinged_server(answer_pings=True) as (url, pings):
        upstream = await open_upstream(url, sink)
        upstream.start()
        upstream.keepalive(interval_s=0.01, timeout_s=1.0)
        # The next ping goes out only once the last one's pong came back: three pings seen
        # mean two pongs were taken, each within its deadline.
        payloads = [await within(pings.get()) for _ in range(3)]
        await upstream.aclose(0.1)
    assert len(set(payloads)) == 3
    assert not sink.unresponsive.is_set()


async def test_an_upstream_that_stops_answering_is_reported_and_dropped() -> None:
    """Issue 17.4: a frozen upstream (here: one that reads but never answers) is noticed by
    its missing pong, reported, and the connection aborted."""
    sink = Sink()
    async with pinged_server(answer_pings=False) as (url, pings):
        upstream = await open_upstream(url, sink)
        upstream.start()
        upstream.keepalive(interval_s=0.01, timeout_s=0.1)
        await within(pings.get())
        await within(sink.unresponsive.wait())
        await sink.wait_closed()
    assert pings.empty()  # one ping, then no other before its deadline


async def test_the_pong_deadline_waits_while_the_relay_is_not_reading() -> None:
    """While the relay holds reading (its client is not keeping up) an answered pong cannot be
    read: that is not the upstream's fault."""
    sink = Sink()
    async with pinged_server(answer_pings=True) as (url, pings):
        upstream = await open_upstream(url, sink)
        upstream.start()
        upstream.pause_reading()
        upstream.keepalive(interval_s=0.01, timeout_s=0.05)
        await within(pings.get())
        await asyncio.sleep(0.2)  # the condition under test: the deadline passes, held
        upstream.resume_reading()
        await within(pings.get())  # the pong was read late, and the pings go on
        await upstream.aclose(0.1)
    assert not sink.unresponsive.is_set()
