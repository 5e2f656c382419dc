"""The relay's client leg: the page's (or an SDK's) WebSocket, after the relay accepts it.

Two implementations of one small interface, `ClientLeg`:

- `DirectLeg`, on the server `voicegw serve` runs: `DirectWebSocketProtocol` is uvicorn's
  sans-I/O WebSocket protocol plus an ASGI extension, `voicegw.direct_websocket`, through which
  the relay takes the connection's frames over once it accepts it. Frames then go straight
  from `data_received` to the session and from the session to the transport: no queue and
  no task switch per frame. Everything else (the handshake, keepalive pings, server shutdown)
  stays uvicorn's.
- `AsgiLeg`, on any other ASGI server: plain `receive`/`send`, one reader and one writer task.

Both deliver text frames as `str`, hold reading while the session is not ready for frames,
and report when the client stops reading what we send (its transport's write buffer is over
the high-water mark), which is how the session notices a client that cannot keep up. While
the client does not read, they do not read it either: every frame it sends may be answered,
and answers it never reads would pile up in memory.

On our server a client cannot hold its socket past its session: the direct leg aborts a
connection whose closing handshake does not finish within the close timeout (a client that
never reads never lets a close finish), and `DirectWebSocketProtocol` aborts any WebSocket
connection still open `ABORT_AFTER_S` after its app is done or the server started stopping.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, Protocol

from starlette.types import Receive, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

# uvicorn's own (private) protocol class: uvicorn is pinned in pyproject.toml for it.
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import WebSocketException
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from .wire import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    FrameSender,
    ProtocolError,
)

DIRECT_EXTENSION = "voicegw.direct_websocket"

# A client not reading what we send is not read either (see above), so its transport's write
# buffer stays near the high-water mark; past this it is not coming back: abort.
MAX_BUFFERED_BYTES = 4 * 1024 * 1024
# How long a connection may stay open once its app is done with it or the server is stopping.
ABORT_AFTER_S = 2.0
# What a client may still send once our close frame is out: the frames it had in flight and its
# answer. One that goes on sending is not closing; reading it until the close timeout would let
# it make the server parse at the loopback's speed for a second per session (bench/soak.py).
CLOSING_READ_BYTES = 64 * 1024
# Frames parsed from one read before the leg looks again whether it still wants frames: a
# flood ends its session at the message rate (200 a second by default) within one such batch,
# not after parsing a whole read of tiny frames (256 KiB of empty frames is 40,000 of them).
FRAMES_PER_BATCH = 256

# uvicorn reports a client that went away mid-send as one of these.
_CLIENT_ERRORS = (OSError, RuntimeError, WebSocketException, WebSocketDisconnect)


class ClientSink(Protocol):
    """What the client leg tells its session."""

    def on_client_text(self, text: str) -> None: ...

    def on_client_binary(self, size: int) -> None: ...

    def on_client_control(self) -> None:
        """A ping (the leg answers it) or a pong arrived: it counts against the rate."""

    def on_client_too_large(self) -> None:
        """The client announced a frame over the leg's size limit; the leg reads no more."""

    def on_client_closed(self) -> None:
        """The client is gone: it closed, or the connection was lost."""

    def on_client_backpressure(self, paused: bool) -> None:
        """The client stopped (True) or resumed (False) reading what we send."""


class ClientLeg(Protocol):
    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake; reading stays held until `resume_reading()`."""

    def send_text(self, payload: bytes) -> None:
        """Queue one text frame (UTF-8 bytes); never blocks."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def close(self, code: int, reason: str, timeout_s: float) -> None:
        """Send what is queued, then the close frame; return once the client answers or
        `timeout_s` passes."""


def open_client_leg(
    websocket: WebSocket,
    receive: Receive,
    send: Send,
    sink: ClientSink,
    *,
    max_size: int | None = None,
) -> ClientLeg:
    """The fastest leg the server offers for this (not yet accepted) WebSocket; `receive` and
    `send` are its raw ASGI callables. `max_size` bounds a message on the direct leg (the ASGI
    leg has the server's own bound)."""
    leg = direct_leg(websocket, sink, max_size=max_size)
    return leg or AsgiLeg(websocket, receive, send, sink)


def direct_leg(
    websocket: WebSocket, sink: ClientSink, *, max_size: int | None = None
) -> DirectLeg | None:
    """Take this (not yet accepted) WebSocket's frames over, when the server offers the
    `voicegw.direct_websocket` extension (it runs `DirectWebSocketProtocol`); None otherwise.
    `max_size` is the largest message read (default: the server's `ws_max_size`); a frame
    announcing more is refused from its header, before anything is buffered."""
    direct = websocket.scope.get("extensions", {}).get(DIRECT_EXTENSION)
    if direct is None:
        return None
    leg: DirectLeg = direct["take_over"](sink, websocket, max_size)
    return leg


# -- on voicegw serve: frames straight from the transport -------------------------------------


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with the `voicegw.direct_websocket` extension.

    An app that finds the extension in its scope may call `take_over(sink, websocket)` before
    it accepts; from the accept on, the connection's frames bypass the ASGI queue and go to the
    returned `DirectLeg`. An app that does not call it gets plain uvicorn behaviour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._leg: DirectLeg | None = None
        self._abort_timer: asyncio.TimerHandle | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # Offered only on plain connections: the direct leg reads no extension (a server run
        # with per-message deflate on hands deflated connections to the ASGI leg).
        if (
            self.response.status_code == 101
            and "Sec-WebSocket-Extensions" not in self.response.headers
        ):
            self.scope["extensions"][DIRECT_EXTENSION] = {"take_over": self._take_over}

    def _take_over(
        self, sink: ClientSink, websocket: WebSocket, max_size: int | None
    ) -> DirectLeg:
        if self.handshake_complete or self._leg is not None:
            raise RuntimeError("take_over() must come before the WebSocket is accepted")
        self._leg = DirectLeg(self, sink, websocket, max_size or self.config.ws_max_size)
        return self._leg

    def data_received(self, data: bytes) -> None:
        leg = self._leg
        if leg is None or not self.handshake_complete:
            super().data_received(data)
        else:
            leg.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if self._leg is not None:
            self._leg.connection_lost()

    def shutdown(self) -> None:
        """The server is stopping: a taken-over connection closes 1012 through its leg."""
        if self._leg is None or not self.handshake_complete:
            super().shutdown()
        else:
            self.stop_keepalive()
            self._leg.sender.fail(1012, "server shutting down")
        self._abort_later()

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        super().on_task_complete(task)
        # uvicorn closes the transport now (or 10 s after its close frame), and a close waits
        # for the write buffer to drain: from a client that never reads, it never does.
        self._abort_later()

    def _abort_later(self) -> None:
        if not self.disconnected and self._abort_timer is None:
            self._abort_timer = self.loop.call_later(ABORT_AFTER_S, self.transport.abort)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._leg is not None:
            self._leg.write_paused(True)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._leg is not None:
            self._leg.write_paused(False)


class DirectLeg:
    """One taken-over connection. Frames in go to the sink from `data_received`; frames out
    are written to the transport at once."""

    def __init__(
        self,
        protocol: DirectWebSocketProtocol,
        sink: ClientSink,
        websocket: WebSocket,
        max_size: int,
    ) -> None:
        self._protocol = protocol
        self.sink = sink
        self._websocket = websocket
        self._transport = protocol.transport
        # uvicorn's keepalive pings must stop at our close frame too.
        self.sender = FrameSender(
            protocol.transport, mask=False, on_close_sent=protocol.stop_keepalive
        )
        self._reader = FrameReader(masked=True, max_size=max_size)
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reading = True
        self._held = False  # by the session: not ready for frames, or OpenAI is not reading
        self._write_paused = False  # the client is not reading what we send
        self._closing = False  # our close frame is out: read only for the client's answer
        self._read_while_closing = 0
        self._broken = False  # an oversize frame was announced: the stream is not parsed on
        if protocol.disconnected:  # lost before the app got here
            self._closed.set_result(None)

    async def accept(self, subprotocol: str | None) -> None:
        self.pause_reading()
        await self._websocket.accept(subprotocol=subprotocol)

    def send_text(self, payload: bytes) -> None:
        self.sender.send(TEXT, payload)
        if self._write_paused and self._transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self._transport.abort()

    def pause_reading(self) -> None:
        self._held = True
        self._update_reading()

    def resume_reading(self) -> None:
        self._held = False
        self._update_reading()

    async def close(self, code: int, reason: str, timeout_s: float) -> None:
        if self._closed.done():
            return
        self.sender.send_close(code, reason)
        self._closing = True
        self._read_while_closing = self._reader.pending  # received, not parsed: it counts
        if self._broken:
            self._transport.close()  # no answer could be read: end it from our side
        else:
            self._update_reading()  # the client's answer must be read
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self._transport.abort()  # it never answered, or never read what we sent

    def _update_reading(self) -> None:
        reading = self._wants_frames()
        if reading is not self._reading and not self._transport.is_closing():
            self._reading = reading
            if reading:
                self._transport.resume_reading()
                if self._reader.limited:  # frames of the last read are still to be parsed
                    asyncio.get_running_loop().call_soon(self.data_received, b"")
            else:
                self._transport.pause_reading()

    def _wants_frames(self) -> bool:
        return self._closing or not (self._held or self._write_paused)

    # -- from the protocol -------------------------------------------------------------------

    def write_paused(self, paused: bool) -> None:
        self._write_paused = paused
        self._update_reading()
        self.sink.on_client_backpressure(paused)

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        if self._closing:
            self._read_while_closing += len(data)
            if self._read_while_closing > CLOSING_READ_BYTES:
                self._broken = True
                self._transport.abort()
                return
        reader = self._reader
        while True:
            try:
                frames = reader.feed(data, FRAMES_PER_BATCH)
            except ProtocolError as exc:
                if exc.code == 1009:  # the session says so (voice.error) and closes
                    self._broken = True
                    self.sink.on_client_too_large()
                else:
                    self.sender.fail(exc.code, exc.reason)
                return
            if not self._deliver(frames):
                return
            # The rest of this read only while frames are wanted (the session may have ended
            # over the rate, or be holding the client); `_update_reading` comes back for it.
            if not (reader.limited and self._wants_frames()) or self._transport.is_closing():
                return
            data = b""

    def _deliver(self, frames: list[tuple[int, bytes]]) -> bool:
        """Hand `frames` to the session; False once the connection is closing."""
        sender, sink = self.sender, self.sink
        if self._closing:  # only the client's answer matters now
            frames = [frame for frame in frames if frame[0] == CLOSE]
        for opcode, payload in frames:
            if opcode == TEXT:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    sender.fail(1007, "text frame is not UTF-8")
                    return False
                sink.on_client_text(text)
            elif opcode == BINARY:
                sink.on_client_binary(len(payload))
            elif opcode == PING:
                sink.on_client_control()
                sender.send(PONG, payload)
            elif opcode == PONG:
                sink.on_client_control()
                self._protocol.handle_pong(Frame(Opcode.PONG, payload))  # uvicorn's keepalive
            elif opcode == CLOSE:
                sender.answer_close(payload)
                return False
        return True

    def connection_lost(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
            self.sink.on_client_closed()


# -- on any ASGI server ---------------------------------------------------------------------

_HIGH_WATER = 64 * 1024  # bytes queued for the client before it counts as not keeping up
_LOW_WATER = 16 * 1024


class AsgiLeg:
    """The portable leg: a reader task on `receive`, a writer task draining an outbox."""

    def __init__(
        self, websocket: WebSocket, receive: Receive, send: Send, sink: ClientSink
    ) -> None:
        self._websocket = websocket
        self._receive = receive
        self._send = send
        self._sink = sink
        self._outbox: collections.deque[bytes | tuple[int, str]] = collections.deque()
        self._queued = 0
        self._paused = False
        self._readable = asyncio.Event()
        self._keeping_up = asyncio.Event()  # clear while the client is not reading
        self._keeping_up.set()
        self._wake = asyncio.Event()
        self._gone = False
        self._tasks: list[asyncio.Task[None]] = []

    async def accept(self, subprotocol: str | None) -> None:
        await self._websocket.accept(subprotocol=subprotocol)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._write())]

    def send_text(self, payload: bytes) -> None:
        if self._gone:
            return
        self._outbox.append(payload)
        self._queued += len(payload)
        if not self._paused and self._queued > _HIGH_WATER:
            self._paused = True
            self._keeping_up.clear()
            self._sink.on_client_backpressure(True)
        self._wake.set()

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    async def close(self, code: int, reason: str, timeout_s: float) -> None:
        if self._tasks and not self._gone:
            self._outbox.append((code, reason))  # the writer sends it after what is queued
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.wait(self._tasks[1:])
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read(self) -> None:
        receive, sink = self._receive, self._sink
        while True:
            await self._readable.wait()
            await self._keeping_up.wait()
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._client_gone()
                return
            text = message.get("text")
            if text is not None:
                sink.on_client_text(text)
            else:
                sink.on_client_binary(len(message.get("bytes") or b""))

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                item = self._outbox.popleft()
                try:
                    if isinstance(item, tuple):
                        await self._send({"type": "websocket.close", "code": item[0],
                                          "reason": item[1]})  # fmt: skip
                        return
                    await self._send({"type": "websocket.send", "text": item.decode()})
                except _CLIENT_ERRORS:
                    self._client_gone()
                    return
                self._queued -= len(item)
                if self._paused and self._queued < _LOW_WATER:
                    self._paused = False
                    self._keeping_up.set()
                    self._sink.on_client_backpressure(False)

    def _client_gone(self) -> None:
        if not self._gone:
            self._gone = True
            self._sink.on_client_closed()
