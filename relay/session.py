"""One relay session: the thin asyncio layer around `RelayProtocol`.

Three pumps run per session: client -> upstream (reads, gates, sends), upstream -> client
(forwards every event as is, then the protocol's state messages), and the client writer that
drains a bounded queue. Whichever pump ends first decides how the session ends; the others,
any running tool calls and both sockets are then closed, so nothing outlives the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from pipelines.contracts import N8nExecutor, VoiceError
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

UPSTREAM_CLOSE_TIMEOUT_S = 0.5
CLIENT_CLOSE_TIMEOUT_S = 1.0
_MAX_UPSTREAM_FRAME = 16 * 1024 * 1024
_CLIENT_GONE = Close(1000, "client gone")
_END = ""  # queue sentinel: the writer stops after what came before it


def _fatal(code: str, message: str) -> VoiceError:
    return VoiceError(code=code, message=message, fatal=True)


class RelaySession:
    """Relays one accepted client WebSocket to one upstream OpenAI Realtime session."""

    def __init__(
        self, websocket: WebSocket, *, session_id: str, config: RelayConfig, subprotocol: str | None
    ) -> None:
        """`websocket` is not yet accepted; `session_id` comes from the redeemed ticket."""
        self._ws = websocket
        self._session_id = session_id
        self._config = config
        self._subprotocol = subprotocol
        self._core = RelayProtocol(config.options, limits=config.limits)
        self._out: asyncio.Queue[str] = asyncio.Queue(config.client_queue_messages)
        self._upstream: ClientConnection | None = None
        self._tools: set[asyncio.Task[None]] = set()
        self._executor = N8nExecutor(config.n8n_base_url, timeout_s=config.n8n_timeout_s)
        self._done: asyncio.Future[Close] = asyncio.get_running_loop().create_future()
        self._client_gone = False

    async def run(self) -> None:
        """Run to the end. Cancelling it is safe: everything is closed on the way out."""
        started = time.monotonic()
        close = Close(1011, "internal error", _fatal("internal", "the relay failed"))
        pumps: list[asyncio.Task[Close]] = []
        writer: asyncio.Task[Close] | None = None
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
            writer = asyncio.create_task(self._write_client())
            pumps = [
                asyncio.create_task(self._pump_client()),
                asyncio.create_task(self._pump_upstream()),
            ]
            for task in (*pumps, writer):
                task.add_done_callback(self._pump_ended)
            early = await self._perform(start)
            if early is not None:
                self._finish(early)
            try:
                async with asyncio.timeout(self._config.max_session_seconds):
                    close = await self._done
            except TimeoutError:
                minutes = self._config.max_session_seconds / 60
                close = Close(
                    1000,
                    "session limit",
                    _fatal(
                        "session_expired",
                        f"the session reached its maximum length ({minutes:g} min); "
                        "start a new one",
                    ),
                )
        finally:
            await self._shutdown(pumps, writer, close)
            log.info(
                "relay session ended",
                extra={
                    "session_id": self._session_id,
                    "close_code": close.code,
                    "close_reason": close.reason,
                    "duration_s": round(time.monotonic() - started, 1),
                },
            )

    # -- pumps -------------------------------------------------------------------------------

    async def _pump_client(self) -> Close:
        receive, core, clock = self._ws.receive, self._core, time.monotonic
        limit = self._config.limits.max_frame_bytes
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._client_gone = True
                return _CLIENT_GONE
            text = message.get("text")
            if text is not None:
                actions = core.client_frame(text, clock())
            elif len(message.get("bytes") or b"") > limit:
                actions = core.client_frame(" " * (limit + 1), clock())  # the same 1009 close
            else:
                actions = core.binary_frame()
            close = await self._perform(actions)
            if close is not None:
                return close

    async def _pump_upstream(self) -> Close:
        assert self._upstream is not None
        core, enqueue, clock = self._core, self._enqueue, time.monotonic
        try:
            async for message in self._upstream:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                if not enqueue(text):
                    return self._too_slow()
                actions = core.upstream_event(text, clock())
                if actions:
                    close = await self._perform(actions)
                    if close is not None:
                        return close
        except ConnectionClosed:
            pass
        return Close(
            1011, "upstream closed", _fatal("upstream_closed", "the OpenAI Realtime session ended")
        )

    async def _write_client(self) -> Close:
        get, send = self._out.get, self._ws.send_text
        try:
            while True:
                text = await get()
                if text is _END:
                    return _CLIENT_GONE
                await send(text)
        except (OSError, RuntimeError, WebSocketException, WebSocketDisconnect):
            # The client went away under us (the server reports it as one of these).
            self._client_gone = True
            return _CLIENT_GONE

    def _enqueue(self, text: str) -> bool:
        try:
            self._out.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    def _too_slow(self) -> Close:
        return Close(
            1013,
            "client too slow",
            _fatal("client_too_slow", "the client did not keep up with the audio; reconnect"),
        )

    async def _perform(self, actions: Sequence[Action]) -> Close | None:
        """Carry out the protocol's actions in order; a Close ends the session."""
        for action in actions:
            match action:
                case ToUpstream(text=text):
                    assert self._upstream is not None
                    try:
                        await self._upstream.send(text)
                    except ConnectionClosed:
                        return Close(
                            1011,
                            "upstream closed",
                            _fatal("upstream_closed", "the OpenAI Realtime session ended"),
                        )
                case ToClient(text=text):
                    if not self._enqueue(text):
                        return self._too_slow()
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
                compression=None,
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

    async def _shutdown(
        self, pumps: list[asyncio.Task[Close]], writer: asyncio.Task[Close] | None, close: Close
    ) -> None:
        for task in (*pumps, *self._tools):
            task.cancel()
        await asyncio.gather(*pumps, *self._tools, return_exceptions=True)
        if self._upstream is not None:
            await self._upstream.close()
        await self._executor.aclose()
        if writer is not None and not writer.done():
            # Flush what is queued, then the final error, unless the client cannot take it.
            if close.code != 1013:
                if close.error is not None:
                    self._enqueue(close.error.to_json())
                self._enqueue(_END)
            try:
                async with asyncio.timeout(CLIENT_CLOSE_TIMEOUT_S):
                    await asyncio.shield(writer)
            except TimeoutError:
                pass
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        elif close.error is not None and not self._client_gone:
            await self._client_call(self._ws.send_text(close.error.to_json()))
        if not self._client_gone and self._ws.application_state != WebSocketState.DISCONNECTED:
            await self._client_call(self._ws.close(close.code, close.reason))

    async def _client_call(self, call: Awaitable[None]) -> None:
        with contextlib.suppress(
            OSError, RuntimeError, WebSocketException, WebSocketDisconnect, TimeoutError
        ):
            async with asyncio.timeout(CLIENT_CLOSE_TIMEOUT_S):
                await call
