"""The gateway's HTTP/1.1 server: uvicorn's httptools protocol with the bounds it lacks.

uvicorn with httptools has no limit on the request line or headers (a 100 MiB header cost 18 s
of CPU: the parser and uvicorn grow it by concatenation, chunk after chunk) and no deadline for
a head or a body to arrive (slowloris sockets stayed open for good). `BoundedHttpToolsProtocol`
adds, per request:

- a cap on the request line plus headers (`max_header_bytes`) and on the number of headers
  (`max_headers`): over either, 431 and the connection is closed. A head still arriving is
  counted as it is read, so a huge one is refused within one read (at most 256 KiB) of the
  cap, before the parser has grown it further;
- a head deadline (`header_timeout_s`, from the connection or a request's first byte to the
  end of its headers): 408 and close;
- a body deadline (`body_timeout_s`, from the end of the headers to the end of the body): the
  connection is closed (the app, reading the body, hears of the disconnect).

Why a subclass rather than uvicorn's h11 protocol, which caps heads
(`h11_max_incomplete_event_size`): h11 has no deadlines either, so a subclass was needed
anyway, and h11 cost about 30% more server CPU per `/v1/session` request here (~330 -> ~445
µs). The relay's WebSocket frames never go through either parser (only the upgrade request).

It overrides uvicorn's private protocol (data_received's body, the parser callbacks,
handle_websocket_upgrade, cycle, url, headers, parser, send_400_response): uvicorn is pinned in
pyproject.toml for that.
"""

from __future__ import annotations

import asyncio
import http
import json
from dataclasses import dataclass
from typing import Any

import httptools

# uvicorn's own (private) protocol class: uvicorn is pinned in pyproject.toml for it.
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipelines.contracts import Settings


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout_s=settings.http_header_timeout_seconds,
            body_timeout_s=settings.http_body_timeout_seconds,
        )


def bounded_http_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """uvicorn's `http=` protocol class with these limits."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


class _Refused(Exception):
    """Raised from a parser callback: answer `status` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_INVALID = "Invalid HTTP request received."  # uvicorn's words


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits = HttpLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._start_deadline(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, plus: the bytes of a head are counted as they come, and a refusal raised
        by a parser callback is answered with its own status."""
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.message)
            else:
                self.logger.warning(_INVALID)
                self.send_400_response(_INVALID)
            return
        except httptools.HttpParserError:
            self.logger.warning(_INVALID)
            self.send_400_response(_INVALID)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, self._too_large())

    def handle_websocket_upgrade(self) -> None:
        self._stop_deadline()  # the WebSocket protocol takes the connection over
        super().handle_websocket_upgrade()

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the first request's runs from the connection
            self._start_deadline(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            raise _Refused(431, f"a request may carry at most {limits.max_headers} headers")
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > limits.max_header_bytes:
            raise _Refused(431, self._too_large())
        self._in_head = False
        self._start_deadline(limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_deadline()
        self._in_head = True  # what comes next is the next request's head
        self._head_bytes = 0

    # -- internals ---------------------------------------------------------------------------

    def _too_large(self) -> str:
        return f"the request line and headers may be at most {self.limits.max_header_bytes} bytes"

    def _start_deadline(self, delay_s: float) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(delay_s, self._deadline_passed)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._in_head:
            self._refuse(408, "the request did not arrive in time")
        elif not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` (unless a response may already be on its way) and close."""
        if self.transport.is_closing():
            return
        self._stop_deadline()
        if self.cycle is None or self.cycle.response_complete:
            code = {408: "request_timeout", 431: "headers_too_large"}.get(status, "bad_request")
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            self.transport.write(_response_head(status, len(body)) + body)
        self.transport.close()


def _response_head(status: int, length: int) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\nconnection: close\r\n\r\n"
    ).encode()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options that depend on the settings (the HTTP protocol with its limits)."""
    return {"http": bounded_http_protocol(HttpLimits.from_settings(settings))}
