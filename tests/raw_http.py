"""A raw HTTP/1.1 client for tests that must send what no client library would: a head that
never ends, a body that never comes, a header a megabyte long."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        """Write `data`; a server that already hung up is not an error here (the test reads
        what it answered)."""
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            await self.writer.drain()

    async def response(self, within: float = 5.0) -> RawResponse:
        """The next response (its Content-Length body included)."""
        async with asyncio.timeout(within):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return RawResponse(int(status_line.split(" ")[1]), headers, body)

    async def closed_by_server(self, within: float = 5.0) -> bytes:
        """Read to the end of the connection (the server closed it); what came before."""
        received = b""
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionError):
                while chunk := await self.reader.read(65536):
                    received += chunk
        return received


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[RawConnection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield RawConnection(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
