"""RFC 6455 framing for the relay's hot path: sans I/O, one pass per read, no generators.

Both relay legs use it: the client leg (we are the server: frames arrive masked) and the
upstream leg (we are the client: we mask what we send). A 20 ms audio frame costs about a
microsecond to parse or to build here, against five in a general-purpose WebSocket library;
at 100 sessions that difference is a tenth of a core. No extension is ever negotiated, so
reserved bits are always an error.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable
from typing import Protocol

# websockets' undocumented masking function (C, else Python): websockets is pinned for it.
try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships in websockets' wheels
    from websockets.utils import apply_mask

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset((CONT, TEXT, BINARY))
_MESSAGE_OPCODES = frozenset((TEXT, BINARY))
_CONTROL_OPCODES = frozenset((CLOSE, PING, PONG))
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Close codes a peer may send (RFC 6455 7.4.1, plus the registered 1012-1014 and the
# application range); 1005 and 1006 are never on the wire.
_VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014))  # fmt: skip


class ProtocolError(Exception):
    """The peer broke RFC 6455: close the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class FrameReader:
    """Turns received bytes into whole messages and control frames.

    `feed()` returns `(opcode, payload)` pairs: TEXT or BINARY with the whole (reassembled)
    message, or CLOSE / PING / PONG with the control payload. Text is not decoded here (the
    reader of a text message decodes it, and a decode error is close code 1007)."""

    def __init__(self, *, masked: bool, max_size: int) -> None:
        """`masked`: frames must arrive masked (we are the server) or unmasked (the client).
        `max_size`: the largest message accepted; beyond it is close code 1009, raised as soon
        as the header announces it, before the payload is buffered."""
        self._mask_bit = 0x80 if masked else 0
        self._max_size = max_size
        self._buffer = bytearray()
        self.limited = False  # the last feed() stopped at max_frames with frames left to parse
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0

    @property
    def pending(self) -> int:
        """Bytes received and not parsed yet."""
        return len(self._buffer)

    def feed(self, data: bytes, max_frames: int = 1 << 62) -> list[tuple[int, bytes]]:
        """Raises ProtocolError when the peer breaks the protocol. At most `max_frames` frames
        are parsed; the rest stays `pending` for the next call (`feed(b"")` goes on)."""
        if self._buffer:
            self._buffer += data
            buf: bytes | bytearray = self._buffer
        else:
            buf = data
        out: list[tuple[int, bytes]] = []
        pos, end, mask_bit, max_size = 0, len(buf), self._mask_bit, self._max_size
        fragments = self._fragments
        while end - pos >= 2 and max_frames:
            max_frames -= 1
            first, second = buf[pos], buf[pos + 1]
            if first & 0x70:
                raise ProtocolError(1002, "reserved bits set")
            if second & 0x80 != mask_bit:
                raise ProtocolError(1002, "client frames must be masked" if mask_bit
                                    else "server frames must not be masked")  # fmt: skip
            opcode, fin, length = first & 0x0F, first & 0x80, second & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = buf[head] << 8 | buf[head + 1]
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if fragments or not (fin and opcode in _MESSAGE_OPCODES and length <= max_size):
                self._check_header(opcode, fin, length)  # anything but a whole small message
            start = head + 4 if mask_bit else head
            stop = start + length
            if stop > end:
                break
            if mask_bit:
                payload = apply_mask(buf[start:stop], buf[head:start])
            else:
                payload = bytes(buf[start:stop])  # a copy only when buf is the bytearray
            pos = stop
            if opcode >= CLOSE:
                out.append((opcode, payload))
            elif opcode == CONT:
                fragments.append(payload)
                self._fragment_size += length
                if fin:
                    out.append((self._fragment_opcode, b"".join(fragments)))
                    fragments.clear()
                    self._fragment_size = 0
            elif fin:
                out.append((opcode, payload))
            else:
                fragments.append(payload)
                self._fragment_opcode = opcode
                self._fragment_size = length
        self.limited = not max_frames and end - pos >= 2
        if pos == 0 and buf is self._buffer:
            return out  # still waiting for the rest of one frame
        if pos < end:
            self._buffer = bytearray(buf[pos:])
        elif self._buffer:
            self._buffer = bytearray()
        return out

    def _check_header(self, opcode: int, fin: int, length: int) -> None:
        if opcode in _CONTROL_OPCODES:
            if not fin or length > 125:
                raise ProtocolError(1002, "control frames are single frames of 125 bytes or less")
            return
        if opcode not in _DATA_OPCODES:
            raise ProtocolError(1002, f"unknown opcode {opcode}")
        if (opcode == CONT) is not bool(self._fragments):
            raise ProtocolError(1002, "unexpected continuation frame" if opcode == CONT
                                else "expected a continuation frame")  # fmt: skip
        if self._fragment_size + length > self._max_size:
            raise ProtocolError(1009, f"message larger than {self._max_size} bytes")


class _MaskKeys:
    """Masking keys from the OS's CSPRNG, drawn 4 KiB at a time (one syscall per 1,024
    frames instead of one per frame)."""

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        if self._pos >= len(self._pool):
            self._pool, self._pos = os.urandom(4096), 0
        key = self._pool[self._pos : self._pos + 4]
        self._pos += 4
        return key


_mask_keys = _MaskKeys()


_HEAD = struct.Struct("!BB").pack
_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final frame. `mask` is True on the client side (RFC 6455 5.3)."""
    length = len(payload)
    first, mask_bit = 0x80 | opcode, 0x80 if mask else 0
    if length < 126:
        head = _HEAD(first, mask_bit | length)
    elif length < 65536:
        head = _HEAD_16(first, mask_bit | 126, length)
    else:
        head = _HEAD_64(first, mask_bit | 127, length)
    if not mask:
        return head + payload
    key = _mask_keys.next()
    return head + key + apply_mask(payload, key)


class Transport(Protocol):
    """The part of an asyncio transport a FrameSender uses."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...


class FrameSender:
    """The sending side of one end of a connection, and the closing handshake both relay
    legs share. `mask` is True on the client side."""

    def __init__(
        self, transport: Transport, *, mask: bool, on_close_sent: Callable[[], None] | None = None
    ) -> None:
        """`on_close_sent` runs once our close frame is out (whoever else writes to the
        connection must stop there too)."""
        self.transport = transport
        self._mask = mask
        self._on_close_sent = on_close_sent
        self.close_sent = False

    def send(self, opcode: int, payload: bytes) -> None:
        """A data or control frame; nothing is sent after our close frame."""
        if not self.close_sent and not self.transport.is_closing():
            self.transport.write(encode_frame(opcode, payload, mask=self._mask))

    def send_close(self, code: int, reason: str = "") -> None:
        if not self.close_sent:
            self.send(CLOSE, close_payload(code, reason))
            self.close_sent = True
            if self._on_close_sent is not None:
                self._on_close_sent()

    def fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol (or the server is going away): close with `code`."""
        self.send_close(code, reason)
        self.transport.close()

    def answer_close(self, payload: bytes) -> None:
        """The peer's close frame arrived: answer it (with its code, unless we closed first)
        and close the transport."""
        try:
            code, _ = parse_close(payload)
        except ProtocolError as exc:
            self.fail(exc.code, exc.reason)
            return
        self.send_close(code if code != 1005 else 1000)
        self.transport.close()


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload; the reason is cut (on a character boundary) to fit the
    125-byte control frame."""
    return code.to_bytes(2, "big") + reason.encode()[:123].decode(errors="ignore").encode()


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame (1005 when it carries none)."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError(1002, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(1002, f"invalid close code {code}")
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(1007, "close reason is not UTF-8") from None


def new_key() -> str:
    """A fresh Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_value(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer `key` with."""
    return base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest()).decode()
