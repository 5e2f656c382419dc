"""Run an ASGI app (a simulator, or the gateway) on a free port in this event loop.

Tests, benchmarks and `voicegw serve --simulate` use it, so every stand-in is a real server the
real client library reaches over a socket. It binds 127.0.0.1 unless told otherwise (the LiveKit
stand-in's media tests bind the address of a network namespace of their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # An embedded server leaves signals to its host process.
        yield


class RunningServer:
    """A uvicorn server started by `serve()`; `url` is its http://<host>:<port> origin."""

    def __init__(self, server: uvicorn.Server, port: int, host: str = "127.0.0.1") -> None:
        self.server = server
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}"


@contextlib.asynccontextmanager
async def serve(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[RunningServer]:
    """Serve `app` on `host:port` (0: a free port) until the block ends. Cancelling the block
    is safe: the server is shut down and its task awaited."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        **{
            "log_config": None,
            "access_log": False,
            "lifespan": "off",
            "ws_per_message_deflate": False,
            "timeout_graceful_shutdown": 1,
            **options,
        },
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raise why it could not start
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.005)
        yield RunningServer(server, bound_port, host)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
