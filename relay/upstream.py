"""The relay's upstream leg: one WebSocket client connection to OpenAI Realtime.

An `asyncio.Protocol` rather than a task reading a stream: each event OpenAI sends is handed
to the session from `data_received`, and each frame the session sends is framed and written at
once, so a frame pair costs no task switch. It speaks just what the relay needs: the opening
handshake with a bearer key, text frames, ping/pong and the closing handshake. `keepalive()`
pings OpenAI on a timer and reports an upstream whose pong does not come back in time (a hung
server or a dead path sends nothing at all, so nothing else would notice it).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from .wire import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    FrameSender,
    ProtocolError,
    accept_value,
    new_key,
)

_MAX_RESPONSE_HEAD = 16 * 1024


class UpstreamError(Exception):
    """The upstream connection could not be opened. The message never carries the URL's
    query, a header or a key."""


class UpstreamSink(Protocol):
    """What the upstream leg tells its session."""

    def on_upstream_message(self, payload: bytes) -> None:
        """One text event, as received (UTF-8 bytes)."""

    def on_upstream_closed(self) -> None:
        """The connection is gone (closing handshake, error, or lost)."""

    def on_upstream_backpressure(self, paused: bool) -> None:
        """OpenAI stopped (True) or resumed (False) reading what we send."""

    def on_upstream_unresponsive(self) -> None:
        """A keepalive ping went unanswered past its deadline; the connection is aborted
        next (and `on_upstream_closed` follows)."""


class Upstream(asyncio.Protocol):
    """A connected upstream; make one with `await Upstream.connect(...)`."""

    def __init__(self, sink: UpstreamSink, request: bytes, key: str, max_size: int) -> None:
        self._sink = sink
        self._request = request
        self._expected_accept = accept_value(key)
        self._reader = FrameReader(masked=False, max_size=max_size)
        self._head = b""
        self._held = b""
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._sender: FrameSender | None = None
        self._open = False
        self._reading = True
        self._ping_interval_s = 0.0
        self._pong_timeout_s = 0.0
        self._ping_payload: bytes | None = None
        self._timer: asyncio.TimerHandle | None = None  # the next ping, or a pong's deadline

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        sink: UpstreamSink,
        headers: dict[str, str],
        max_size: int,
        open_timeout_s: float,
    ) -> Upstream:
        """Open the connection and complete the handshake; raises UpstreamError or
        TimeoutError."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise UpstreamError("the upstream URL must be ws:// or wss://")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        default_port = port == (443 if secure else 80)
        host = parts.hostname if default_port else f"{parts.hostname}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = new_key()
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "User-Agent: voicegw-relay",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        protocol = cls(sink, request, key, max_size)
        context = ssl.create_default_context() if secure else None
        try:
            async with asyncio.timeout(open_timeout_s):
                await loop.create_connection(
                    lambda: protocol, parts.hostname, port, ssl=context,
                    server_hostname=parts.hostname if secure else None,
                )  # fmt: skip
                await protocol.opened
        except BaseException:
            protocol.abort()
            raise
        return protocol

    # -- what the session calls --------------------------------------------------------------

    def start(self) -> None:
        """Deliver events from here on (the connection is held still until then)."""
        held, self._held = self._held, b""
        self.resume_reading()
        if held:
            self.data_received(held)

    def send_text(self, payload: bytes) -> None:
        if self._open:
            assert self._sender is not None
            self._sender.send(TEXT, payload)

    def pause_reading(self) -> None:
        self._reading = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def keepalive(self, interval_s: float, timeout_s: float) -> None:
        """Ping every `interval_s` (counted from the last pong); a pong not read within
        `timeout_s` of its ping makes the sink hear `on_upstream_unresponsive()`, and the
        connection is aborted. The deadline waits while reading is held (a pong cannot be
        read then); the next ping goes out only once the last one was answered."""
        self._ping_interval_s, self._pong_timeout_s = interval_s, timeout_s
        self._schedule(interval_s, self._ping)

    async def aclose(self, timeout_s: float) -> None:
        """Closing handshake (1000), waiting at most `timeout_s` for OpenAI's answer."""
        self._schedule(None)
        if self._sender is None or self._closed.done():
            return
        self._sender.send_close(1000)
        self.resume_reading()  # the answer must be read
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._sender = FrameSender(self._transport, mask=True)  # type: ignore[arg-type]
        self._sender.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if not self._open:
            # Events that came with the handshake wait for start(): the session sends its
            # session.update before it hears anything from OpenAI.
            self._held = self._handshake(data)
            if self._open:
                self.pause_reading()
            return
        sender = self._sender
        assert sender is not None
        try:
            frames = self._reader.feed(data)
        except ProtocolError as exc:
            sender.fail(exc.code, exc.reason)
            return
        sink = self._sink
        for opcode, payload in frames:
            if opcode == TEXT:
                sink.on_upstream_message(payload)
            elif opcode == BINARY:
                sink.on_upstream_message(payload.decode("utf-8", "replace").encode())
            elif opcode == PING:
                sender.send(PONG, payload)
            elif opcode == PONG:
                if payload == self._ping_payload:
                    self._ping_payload = None
                    self._schedule(self._ping_interval_s, self._ping)
            elif opcode == CLOSE:
                sender.answer_close(payload)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._schedule(None)
        if not self.opened.done():
            self.opened.set_exception(UpstreamError("the upstream closed during the handshake"))
        if not self._closed.done():
            self._closed.set_result(None)
            if self._open:
                self._sink.on_upstream_closed()

    def pause_writing(self) -> None:
        self._sink.on_upstream_backpressure(True)

    def resume_writing(self) -> None:
        self._sink.on_upstream_backpressure(False)

    # -- internals ---------------------------------------------------------------------------

    def _schedule(self, delay_s: float | None, callback: Callable[[], None] | None = None) -> None:
        """One timer at a time: the next ping, or the deadline of the one in flight."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay_s is not None and callback is not None:
            self._timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _ping(self) -> None:
        if self._sender is None or self._sender.close_sent or self._closed.done():
            return
        self._ping_payload = os.urandom(4)
        self._sender.send(PING, self._ping_payload)
        self._schedule(self._pong_timeout_s, self._pong_overdue)

    def _pong_overdue(self) -> None:
        if not self._reading:  # held by us: the pong may be waiting unread
            self._schedule(self._pong_timeout_s, self._pong_overdue)
            return
        self._timer = None
        self._sink.on_upstream_unresponsive()
        self.abort()

    def _handshake(self, data: bytes) -> bytes:
        """Read the response head; return what follows it (frames) once it is accepted."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_RESPONSE_HEAD:
                self._refuse("the upstream response head is too large")
            return b""
        head, rest = self._head[:end].decode("latin-1"), self._head[end + 4 :]
        self._head = b""
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            status = parts[1] if len(parts) > 1 and parts[1].isdigit() else "an invalid status"
            self._refuse(f"the upstream answered {status} instead of switching protocols")
            return b""
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if (
            headers.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-accept") != self._expected_accept
        ):
            self._refuse("the upstream handshake response is invalid")
            return b""
        if headers.get("sec-websocket-extensions"):
            self._refuse("the upstream negotiated an extension the relay did not offer")
            return b""
        self._open = True
        self.opened.set_result(None)
        return rest

    def _refuse(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(UpstreamError(why))
        self.abort()
