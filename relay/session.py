"""One relay session: the callbacks between the two legs and `RelayProtocol`.

Each leg hands frames to the session as they arrive (`on_client_text`, `on_upstream_message`),
and the session carries out the protocol's actions at once: an upstream event reaches the
client before its state messages, with no queue and no task between them. The only tasks are
`run()` itself, which waits for the end, and the tool calls.

Memory is bounded both ways without a queue of our own: when one side stops reading what we
send (its transport is over the high-water mark), the session stops reading the other side, so
TCP pushes back to the sender. A client that stays stalled for `client_stall_s` is closed with
1013.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import monotonic

from pipelines.contracts import N8nExecutor, fatal_error
from pipelines.contracts.history import NO_SESSION_HISTORY, SessionHistory
from pipelines.contracts.metrics import RELAY_SESSIONS_ACTIVE, UPSTREAM_ERRORS, observe_turn
from pipelines.openai_realtime import (
    FORWARD,
    Action,
    Close,
    Forward,
    RelayProtocol,
    StartTool,
    ToClient,
    ToUpstream,
)

from .client_leg import ClientLeg
from .config import RelayConfig
from .upstream import Upstream, UpstreamError

log = logging.getLogger("voicegw.relay")

UPSTREAM_CLOSE_TIMEOUT_S = 0.5
CLIENT_CLOSE_TIMEOUT_S = 1.0
_MAX_UPSTREAM_FRAME = 16 * 1024 * 1024


_CLIENT_GONE = Close(1000, "client gone")
_UPSTREAM_CLOSED = Close(
    1011, "upstream closed", fatal_error("upstream_closed", "the OpenAI Realtime session ended")
)
_UPSTREAM_UNAVAILABLE = Close(
    1011,
    "upstream unavailable",
    fatal_error("upstream_unavailable", "could not connect to OpenAI Realtime"),
)
_UPSTREAM_TIMEOUT = Close(
    1011,
    "upstream not answering",
    fatal_error("upstream_timeout", "OpenAI Realtime stopped answering"),
)
_UPSTREAM_FAILURES = (_UPSTREAM_CLOSED, _UPSTREAM_UNAVAILABLE, _UPSTREAM_TIMEOUT)
_INTERNAL = Close(1011, "internal error", fatal_error("internal", "the relay failed"))
_TOO_SLOW = Close(
    1013,
    "client too slow",
    fatal_error("client_too_slow", "the client did not keep up with the audio; reconnect"),
)


class RelaySession:
    """Relays one client WebSocket to one upstream OpenAI Realtime session."""

    def __init__(
        self,
        *,
        session_id: str,
        config: RelayConfig,
        history: SessionHistory = NO_SESSION_HISTORY,
    ) -> None:
        """`session_id` comes from the ticket; `history` records this half of the session (the
        protocol core records the turns; the session how it ended). Give the session its
        client leg in `run()`."""
        self._session_id = session_id
        self._config = config
        self._history = history
        self._core = RelayProtocol(config.options, limits=config.limits, history=history)
        self._client: ClientLeg | None = None
        self._upstream: Upstream | None = None
        self._tools: set[asyncio.Task[None]] = set()
        self._executor = N8nExecutor(config.n8n_base_url, timeout_s=config.n8n_timeout_s)
        self._done: asyncio.Future[Close] = asyncio.get_running_loop().create_future()
        self._ended = False
        self._client_gone = False
        self._stall_timer: asyncio.TimerHandle | None = None

    async def run(self, client: ClientLeg, subprotocol: str | None) -> None:
        """Accept `client` and relay until the session ends. Cancelling it is safe: everything
        is closed on the way out."""
        started = monotonic()
        close = _INTERNAL
        self._client = client
        RELAY_SESSIONS_ACTIVE.inc()
        try:
            await client.accept(subprotocol)
            start = self._core.start()
            self._upstream = await self._connect_upstream()
            if self._upstream is None:
                close = _UPSTREAM_UNAVAILABLE
                return
            log.info("relay session started", extra={"session_id": self._session_id})
            # Our session.update goes first: no client frame, and no upstream event, is read
            # before it is sent.
            self._perform(start)
            self._upstream.start()
            self._upstream.keepalive(
                self._config.upstream_ping_interval_s, self._config.upstream_ping_timeout_s
            )
            client.resume_reading()
            close = await self._watch(started + self._config.max_session_seconds)
        finally:
            await self._shutdown(close)
            if close.error is not None:
                self._history.error(close.error)
            self._history.ended(close.reason)
            RELAY_SESSIONS_ACTIVE.dec()
            if close in _UPSTREAM_FAILURES:
                UPSTREAM_ERRORS.labels(mode="openai").inc()
            log.info(
                "relay session ended",
                extra={
                    "session_id": self._session_id,
                    "close_code": close.code,
                    "close_reason": close.reason,
                    "duration_s": round(monotonic() - started, 1),
                },
            )

    async def _watch(self, deadline: float) -> Close:
        """Wait for the session's end: a verdict, the session limit, or a stalled client (all
        three arrive through `_done`; nothing polls)."""
        loop = asyncio.get_running_loop()
        limit = loop.call_later(max(0.0, deadline - monotonic()), self._finish, self._expired())
        try:
            return await asyncio.shield(self._done)
        finally:
            limit.cancel()

    def _expired(self) -> Close:
        minutes = self._config.max_session_seconds / 60
        return Close(
            1000,
            "session limit",
            fatal_error(
                "session_expired",
                f"the session reached its maximum length ({minutes:g} min); start a new one",
            ),
        )

    # -- from the legs (called from their transports' callbacks) ----------------------------

    def on_client_text(self, text: str) -> None:
        if self._ended:
            return
        try:
            actions = self._core.client_frame(text, monotonic())
            if actions is FORWARD:  # nearly every frame: an audio append
                assert self._upstream is not None
                self._upstream.send_text(text.encode())
            else:
                self._perform(actions, text)
        except Exception:
            self._failed()

    def on_client_binary(self, size: int) -> None:
        if not self._ended:
            self._perform(self._core.binary_frame(size, monotonic()))

    def on_client_control(self) -> None:
        if not self._ended:
            actions = self._core.control_frame(monotonic())
            if actions:
                self._perform(actions)

    def on_client_too_large(self) -> None:
        if not self._ended:
            self._perform(self._core.frame_too_large())

    def on_client_closed(self) -> None:
        self._client_gone = True
        self._finish(_CLIENT_GONE)

    def on_client_backpressure(self, paused: bool) -> None:
        """The client is not reading: stop reading OpenAI until it does, and give it
        `client_stall_s` to catch up before it is closed with 1013."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if paused:
            self._stall_timer = asyncio.get_running_loop().call_later(
                self._config.client_stall_s, self._finish, _TOO_SLOW
            )
        if self._upstream is not None:
            if paused:
                self._upstream.pause_reading()
            else:
                self._upstream.resume_reading()

    def on_upstream_message(self, payload: bytes) -> None:
        if self._ended:
            return
        assert self._client is not None
        self._client.send_text(payload)  # every event is forwarded, as received
        if self._core.is_passthrough(payload):  # nearly every event: an audio delta
            return
        try:
            text = payload.decode("utf-8", "replace")
            self._perform(self._core.upstream_event(text, monotonic()))
        except Exception:
            self._failed()

    def on_upstream_closed(self) -> None:
        self._finish(_UPSTREAM_CLOSED)

    def on_upstream_unresponsive(self) -> None:
        log.warning("upstream stopped answering pings", extra={"session_id": self._session_id})
        self._finish(_UPSTREAM_TIMEOUT)

    def on_upstream_backpressure(self, paused: bool) -> None:
        """OpenAI is not reading: stop reading the client until it does."""
        if self._client is not None:
            if paused:
                self._client.pause_reading()
            else:
                self._client.resume_reading()

    # -- actions -----------------------------------------------------------------------------

    def _failed(self) -> None:
        """A bug in a protocol step ends the session, not the server."""
        log.exception("relay step failed", extra={"session_id": self._session_id})
        self._finish(_INTERNAL)

    def _perform(self, actions: Sequence[Action], client_frame: str = "") -> None:
        """Carry out the protocol's actions in order; a Close ends the session.
        `client_frame` is the frame a `Forward` sends on."""
        for action in actions:
            match action:
                case Forward():
                    assert self._upstream is not None
                    self._upstream.send_text(client_frame.encode())
                case ToUpstream(text=text):
                    assert self._upstream is not None
                    self._upstream.send_text(text.encode())
                case ToClient(text=text, turn=turn):
                    if turn is not None:
                        observe_turn("openai", turn.model_dump(exclude={"type"}))
                    assert self._client is not None
                    self._client.send_text(text.encode())
                case StartTool():
                    task = asyncio.create_task(self._run_tool(action))
                    self._tools.add(task)
                    task.add_done_callback(self._tools.discard)
                case Close():
                    self._finish(action)
                    return

    async def _run_tool(self, call: StartTool) -> None:
        result = await self._executor.execute(
            session_id=self._session_id,
            call_id=call.call_id,
            name=call.name,
            arguments=call.arguments,
        )
        if self._ended:
            return
        try:
            self._perform(self._core.tool_finished(result, monotonic()))
        except Exception:
            self._failed()

    # -- lifecycle ---------------------------------------------------------------------------

    async def _connect_upstream(self) -> Upstream | None:
        config = self._config
        if config.api_key is None:
            log.error("OPENAI_API_KEY is not set", extra={"session_id": self._session_id})
            return None
        try:
            return await Upstream.connect(
                config.upstream_target(),
                sink=self,
                headers={"Authorization": f"Bearer {config.api_key}"},
                max_size=_MAX_UPSTREAM_FRAME,
                open_timeout_s=config.upstream_open_timeout_s,
            )
        except (OSError, TimeoutError, UpstreamError) as exc:
            # An OSError's text can carry the address; UpstreamError's never carries a secret.
            why = str(exc) if isinstance(exc, UpstreamError) else type(exc).__name__
            log.warning(
                "upstream connection failed",
                extra={"session_id": self._session_id, "error": why},
            )
            return None

    def _finish(self, close: Close) -> None:
        if not self._ended:
            self._ended = True  # frames that still arrive are ignored
            self._done.set_result(close)
            if self._client is not None:
                # Nor read: closing OpenAI first takes up to UPSTREAM_CLOSE_TIMEOUT_S, and a
                # client flooding the socket meanwhile (the very one over the rate) would be
                # parsed at the loopback's speed. The close reads its answer again.
                self._client.pause_reading()

    async def _shutdown(self, close: Close) -> None:
        self._finish(close)  # late frames are ignored from here on
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        for task in self._tools:
            task.cancel()
        await asyncio.gather(*self._tools, return_exceptions=True)
        if self._upstream is not None:
            await self._upstream.aclose(UPSTREAM_CLOSE_TIMEOUT_S)
        await self._executor.aclose()
        client = self._client
        if client is None:
            return
        if close.error is not None and close is not _TOO_SLOW and not self._client_gone:
            client.send_text(close.error.to_json().encode())
        await client.close(close.code, close.reason, CLIENT_CLOSE_TIMEOUT_S)
