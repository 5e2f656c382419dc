"""One relay session: the thin asyncio layer around `RelayProtocol`.

Two pumps run per session: client -> upstream (reads, gates, sends) and upstream -> client
(forwards every event as is, then the protocol's state messages). Whichever ends first decides
how the session ends; the other, any running tool calls and both sockets are then closed, so
nothing outlives the session.

Memory is bounded both ways without a queue of our own: each pump holds one frame at a time,
the server's and the upstream client's receive queues are bounded (so a stalled side pushes
back through TCP), and sending to the client waits while the transport's write buffer is above
its high-water mark. A client that stays stalled for `client_stall_s` is closed with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence

from starlette.types import Receive, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from pipelines.contracts import N8nExecutor, VoiceError
from pipelines.contracts.metrics import RELAY_SESSIONS_ACTIVE, UPSTREAM_ERRORS, observe_turn
from pipelines.openai_realtime import (
    Action,
    Close,
    RelayProtocol,
    StartTool,
    ToClient,
    ToUpstream,
)

from .config import RelayConfig

log = logging.getLogger("voicegw.relay")
upstream_log = logging.getLogger("voicegw.relay.upstream")

UPSTREAM_CLOSE_TIMEOUT_S = 0.5
CLIENT_CLOSE_TIMEOUT_S = 1.0
WATCH_INTERVAL_S = 0.25
_MAX_UPSTREAM_FRAME = 16 * 1024 * 1024
_UPSTREAM_MAX_QUEUE = 64  # frames the upstream client buffers before it stops reading
_CLIENT_GONE = Close(1000, "client gone")
# uvicorn reports a client that went away mid-send as one of these.
_CLIENT_ERRORS = (OSError, RuntimeError, WebSocketException, WebSocketDisconnect)


def _fatal(code: str, message: str) -> VoiceError:
    return VoiceError(code=code, message=message, fatal=True)


_UPSTREAM_CLOSED = Close(
    1011, "upstream closed", _fatal("upstream_closed", "the OpenAI Realtime session ended")
)
_TOO_SLOW = Close(
    1013,
    "client too slow",
    _fatal("client_too_slow", "the client did not keep up with the audio; reconnect"),
)


class _ClientGone(Exception):
    pass


class RelaySession:
    """Relays one client WebSocket to one upstream OpenAI Realtime session."""

    def __init__(
        self,
        websocket: WebSocket,
        receive: Receive,
        send: Send,
        *,
        session_id: str,
        config: RelayConfig,
        subprotocol: str | None,
    ) -> None:
        """`websocket` is not yet accepted; `receive`/`send` are its raw ASGI callables (the
        hot path skips Starlette's per-message checks); `session_id` comes from the ticket."""
        self._ws = websocket
        self._receive = receive
        self._send = send
        self._session_id = session_id
        self._config = config
        self._subprotocol = subprotocol
        self._core = RelayProtocol(config.options, limits=config.limits)
        self._upstream: ClientConnection | None = None
        self._tools: set[asyncio.Task[None]] = set()
        self._executor = N8nExecutor(config.n8n_base_url, timeout_s=config.n8n_timeout_s)
        self._done: asyncio.Future[Close] = asyncio.get_running_loop().create_future()
        self._client_gone = False
        self._sends = 0  # client sends in flight
        self._stalled_since: float | None = None

    async def run(self) -> None:
        """Run to the end. Cancelling it is safe: everything is closed on the way out."""
        started = time.monotonic()
        close = Close(1011, "internal error", _fatal("internal", "the relay failed"))
        pumps: list[asyncio.Task[Close]] = []
        RELAY_SESSIONS_ACTIVE.inc()
        try:
            await self._ws.accept(subprotocol=self._subprotocol)
            start = self._core.start()
            self._upstream = await self._connect_upstream()
            if self._upstream is None:
                close = Close(
                    1011,
                    "upstream unavailable",
                    _fatal("upstream_unavailable", "could not connect to OpenAI Realtime"),
                )
                return
            log.info("relay session started", extra={"session_id": self._session_id})
            # Our session.update goes first: no client frame can overtake it.
            early = await self._perform(start)
            if early is not None:
                close = early
                return
            pumps = [
                asyncio.create_task(self._pump_client()),
                asyncio.create_task(self._pump_upstream()),
            ]
            for task in pumps:
                task.add_done_callback(self._pump_ended)
            close = await self._watch(started + self._config.max_session_seconds)
        finally:
            await self._shutdown(pumps, close)
            RELAY_SESSIONS_ACTIVE.dec()
            if close.code == 1011 and close.reason.startswith("upstream"):
                UPSTREAM_ERRORS.labels(mode="openai").inc()
            log.info(
                "relay session ended",
                extra={
                    "session_id": self._session_id,
                    "close_code": close.code,
                    "close_reason": close.reason,
                    "duration_s": round(time.monotonic() - started, 1),
                },
            )

    async def _watch(self, deadline: float) -> Close:
        """Wait for the session's end: a pump's verdict, the session limit, or a stalled client."""
        while True:
            now = time.monotonic()
            if now >= deadline:
                minutes = self._config.max_session_seconds / 60
                return Close(
                    1000,
                    "session limit",
                    _fatal(
                        "session_expired",
                        f"the session reached its maximum length ({minutes:g} min); "
                        "start a new one",
                    ),
                )
            stalled = self._stalled_since
            if stalled is not None and now - stalled >= self._config.client_stall_s:
                return _TOO_SLOW
            await asyncio.wait((self._done,), timeout=min(WATCH_INTERVAL_S, deadline - now))
            if self._done.done():
                return self._done.result()

    # -- pumps -------------------------------------------------------------------------------

    async def _pump_client(self) -> Close:
        receive, core, clock = self._receive, self._core, time.monotonic
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._client_gone = True
                return _CLIENT_GONE
            text = message.get("text")
            if text is not None:
                actions = core.client_frame(text, clock())
            else:
                actions = core.binary_frame(len(message.get("bytes") or b""))
            close = await self._perform(actions)
            if close is not None:
                return close

    async def _pump_upstream(self) -> Close:
        assert self._upstream is not None
        core, send, clock = self._core, self._send_client, time.monotonic
        try:
            async for message in self._upstream:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                await send(text)
                actions = core.upstream_event(text, clock())
                if actions:
                    close = await self._perform(actions)
                    if close is not None:
                        return close
        except ConnectionClosed:
            pass
        except _ClientGone:
            return _CLIENT_GONE
        return _UPSTREAM_CLOSED

    async def _send_client(self, text: str) -> None:
        """Send one text frame to the client; waits while its transport is above high water.
        Raises _ClientGone when the client has gone."""
        if self._sends == 0:
            self._stalled_since = time.monotonic()
        self._sends += 1
        try:
            await self._send({"type": "websocket.send", "text": text})
        except _CLIENT_ERRORS:
            self._client_gone = True
            raise _ClientGone from None
        finally:
            self._sends -= 1
            if self._sends == 0:
                self._stalled_since = None

    async def _perform(self, actions: Sequence[Action]) -> Close | None:
        """Carry out the protocol's actions in order; a Close ends the session."""
        for action in actions:
            match action:
                case ToUpstream(text=text):
                    assert self._upstream is not None
                    try:
                        await self._upstream.send(text)
                    except ConnectionClosed:
                        return _UPSTREAM_CLOSED
                case ToClient(text=text, turn=turn):
                    if turn is not None:
                        observe_turn("openai", turn.model_dump(exclude={"type"}))
                    try:
                        await self._send_client(text)
                    except _ClientGone:
                        return _CLIENT_GONE
                case StartTool():
                    task = asyncio.create_task(self._run_tool(action))
                    self._tools.add(task)
                    task.add_done_callback(self._tools.discard)
                case Close():
                    return action
        return None

    async def _run_tool(self, call: StartTool) -> None:
        result = await self._executor.execute(
            session_id=self._session_id,
            call_id=call.call_id,
            name=call.name,
            arguments=call.arguments,
        )
        close = await self._perform(self._core.tool_finished(result, time.monotonic()))
        if close is not None:
            self._finish(close)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _connect_upstream(self) -> ClientConnection | None:
        config = self._config
        if config.api_key is None:
            log.error("OPENAI_API_KEY is not set", extra={"session_id": self._session_id})
            return None
        try:
            return await connect(
                config.upstream_target(),
                additional_headers={"Authorization": f"Bearer {config.api_key}"},
                open_timeout=config.upstream_open_timeout_s,
                close_timeout=UPSTREAM_CLOSE_TIMEOUT_S,
                max_size=_MAX_UPSTREAM_FRAME,
                max_queue=_UPSTREAM_MAX_QUEUE,
                compression=None,
                logger=upstream_log,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            # The exception text can carry the URL and response headers: log its type only.
            log.warning(
                "upstream connection failed",
                extra={"session_id": self._session_id, "error": type(exc).__name__},
            )
            return None

    def _finish(self, close: Close) -> None:
        if not self._done.done():
            self._done.set_result(close)

    def _pump_ended(self, task: asyncio.Task[Close]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._finish(task.result())
            return
        log.error(
            "relay pump failed",
            exc_info=exc,
            extra={"session_id": self._session_id, "error": type(exc).__name__},
        )
        self._finish(Close(1011, "internal error", _fatal("internal", "the relay failed")))

    async def _shutdown(self, pumps: list[asyncio.Task[Close]], close: Close) -> None:
        for task in (*pumps, *self._tools):
            task.cancel()
        await asyncio.gather(*pumps, *self._tools, return_exceptions=True)
        if self._upstream is not None:
            await self._upstream.close()
        await self._executor.aclose()
        if self._client_gone or self._ws.application_state == WebSocketState.DISCONNECTED:
            return
        if close.error is not None and close.code != _TOO_SLOW.code:
            await self._client_call(self._send_client(close.error.to_json()))
        await self._client_call(self._ws.close(close.code, close.reason))

    async def _client_call(self, call: Awaitable[None]) -> None:
        with contextlib.suppress(*_CLIENT_ERRORS, _ClientGone, TimeoutError):
            async with asyncio.timeout(CLIENT_CLOSE_TIMEOUT_S):
                await call
