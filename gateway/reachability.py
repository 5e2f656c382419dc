"""Whether the services a mode needs can be reached from here, for `/readyz`.

A TCP connection to the host and port of the service's URL (the name resolved, the port
open), bounded by a short timeout and remembered for a while, so a load balancer polling
`/readyz` does not turn into a stream of connections to LiveKit or OpenAI. Concurrent checks
of one target share one connection attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

CHECK_TIMEOUT_S = 1.0
CACHE_S = 10.0
_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


@dataclass(frozen=True)
class Reach:
    """One check's outcome: `problem` says why it failed (no address, no credential)."""

    ok: bool
    problem: str | None = None


class Reachability:
    """The reachability of the host and port of one URL, checked at most every `cache_s`."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = CHECK_TIMEOUT_S,
        cache_s: float = CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._last: tuple[float, Reach] | None = None
        self._lock = asyncio.Lock()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def check(self) -> Reach:
        """The last outcome while it is fresh, else a new check. Safe to cancel."""
        async with self._lock:
            if self._last is not None and self._clock() - self._last[0] < self._cache_s:
                return self._last[1]
            reach = await self._connect()
            self._last = (self._clock(), reach)
            return reach

    async def _connect(self) -> Reach:
        try:
            async with asyncio.timeout(self._timeout_s):
                _, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            return Reach(False, f"{self.target}: no answer within {self._timeout_s:g} s")
        except socket.gaierror:
            return Reach(False, f"{self.target}: the name does not resolve")
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else "cannot connect"
            return Reach(False, f"{self.target}: {why.lower()}")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Reach(True)
