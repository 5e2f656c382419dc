"""`WS /v1/realtime`: admit a client with its relay ticket, then run a `RelaySession`.

The ticket is taken from `?ticket=`, `Authorization: Bearer`, or the
`openai-insecure-api-key.<ticket>` subprotocol (what browser Realtime clients send; the socket
is then answered with the `realtime` subprotocol), so the official OpenAI SDKs connect through
the relay unchanged. A refused ticket closes the socket before any upstream connection is
opened: 4401 (missing, forged, expired), 4403 (used already), 4429 (its session id holds
`max_sessions_per_id` relay sessions already) or 1013 (the shared state did not answer: the
relay fails closed rather than let a ticket be used twice; the page asks for a fresh session).
The last two send a fatal `voice.error` first, saying why.
"""

from __future__ import annotations

import gc
import logging
import re
from urllib.parse import parse_qsl, urlencode

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from pipelines.contracts import fatal_error
from pipelines.contracts.history import NO_HISTORY, HistoryRecorder

from .client_leg import open_client_leg
from .config import RelayConfig
from .session import RelaySession
from .tickets import Admission, RelayLedger, TicketError, verify_ticket

log = logging.getLogger("voicegw.relay")

# Query parameters whose values may be logged; every other value is a possible credential
# (`ticket` in any spelling the server decodes, `launch`, or anything else).
_LOGGABLE_PARAMS = frozenset({"mode", "model"})
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

_SECRET_HEADERS = frozenset({"authorization", "sec-websocket-protocol"})

SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."

# How each refusal by the ledger closes the socket: code, reason, and the voice.error (if any).
_REFUSED: dict[Admission, tuple[int, str, str | None, str]] = {
    "used": (4403, "ticket already used", None, ""),
    "full": (
        4429,
        "too many relay sessions",
        "too_many_sessions",
        "this session already holds its limit of relay connections",
    ),
    "unavailable": (
        1013,
        "try again later",
        "state_unavailable",
        "the gateway cannot check tickets right now; ask for a new session",
    ),
}
# A slot outlives the longest session by this much, so a replica that dies holding one frees
# it by itself.
_LEASE_MARGIN_S = 60.0


class RelayEndpoint:
    """The relay's ASGI WebSocket app; mount it with `WebSocketRoute("/v1/realtime", ...)`."""

    def __init__(
        self, config: RelayConfig, ledger: RelayLedger, history: HistoryRecorder = NO_HISTORY
    ) -> None:
        """One per process. `ledger` remembers used tickets and open sessions (the gateway's
        store: shared by every replica when it is Redis); `history` records each admitted
        relay session as one half of its session."""
        self.config = config
        self._ledger = ledger
        self._history = history
        # Everything imported so far (the openai SDK's types alone are ~100k objects) lives as
        # long as the process. Left in the collector's generations, each full collection walks
        # them all: a ~65 ms stall of every live session, the relay's worst latency tail.
        gc.freeze()
        redact_secrets_in(logging.getLogger("uvicorn.error"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        token, subprotocol = credentials(websocket)
        try:
            ticket = verify_ticket(self.config.ticket_secret, token)
        except TicketError as exc:
            log.info("relay ticket refused", extra={"close_code": exc.code, "why": exc.reason})
            await websocket.accept(subprotocol=subprotocol)
            await websocket.close(exc.code, exc.reason)
            return
        admission, slot = await self._ledger.admit_relay(
            jti=ticket.jti,
            expires_at=ticket.expires_at,
            session_id=ticket.session_id,
            limit=self.config.max_sessions_per_id,
            lease_s=self.config.max_session_seconds + _LEASE_MARGIN_S,
        )
        if admission != "admitted" or slot is None:
            code, reason, error, message = _REFUSED.get(admission, _REFUSED["unavailable"])
            log.info(
                "relay ticket refused",
                extra={"session_id": ticket.session_id, "close_code": code, "why": reason},
            )
            await websocket.accept(subprotocol=subprotocol)
            if error is not None:
                await websocket.send_text(fatal_error(error, message).to_json())
            await websocket.close(code, reason)
            return
        session = RelaySession(
            session_id=ticket.session_id,
            config=self.config,
            history=self._history.open(
                session_id=ticket.session_id, mode="openai", user=ticket.user
            ),
        )
        leg = open_client_leg(
            websocket, receive, send, session, max_size=self.config.limits.max_frame_bytes
        )
        try:
            await session.run(leg, subprotocol)
        finally:
            await self._ledger.release_relay(session_id=ticket.session_id, slot=slot)


def credentials(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The ticket the client presented (if any) and the subprotocol to answer with."""
    offered: list[str] = list(websocket.scope.get("subprotocols") or [])
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    token = websocket.query_params.get("ticket") or None
    if token is None:
        scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
    if token is None:
        for protocol in offered:
            if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
                token = protocol[len(KEY_SUBPROTOCOL_PREFIX) :] or None
                break
    return token, subprotocol


class RedactSecrets(logging.Filter):
    """Keeps tickets and keys out of the WebSocket libraries' logs: uvicorn logs each accepted
    path with its raw query string, and websockets logs the request line and every handshake
    header at DEBUG. A logged path's query is parsed as the server parses it (so `%74icket`
    is `ticket`, and an escaped value is the ticket too) and every value but a few harmless
    ones is redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or not args:
            return True
        if (
            len(args) == 2
            and isinstance(args[0], str)
            and args[0].lower() in _SECRET_HEADERS
            and record.msg in ("< %s: %s", "> %s: %s")
        ):
            record.args = (args[0], "<redacted>")
        elif any(isinstance(arg, str) and arg.startswith("/") and "?" in arg for arg in args):
            record.args = tuple(
                redact_query(arg) if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in args
            )
        return True


def redact_query(path: str) -> str:
    """`path` with the value of every query parameter but `_LOGGABLE_PARAMS` redacted, and
    any name that is not a short plain word too (a ticket can be sent as a name)."""
    path, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)  # as Starlette reads the query
    redacted = [
        (
            k if _PLAIN_NAME.fullmatch(k) else "<redacted>",
            v if k in _LOGGABLE_PARAMS else "<redacted>",
        )
        for k, v in pairs
    ]
    return f"{path}?{urlencode(redacted, safe='<>')}"


def redact_secrets_in(logger: logging.Logger) -> logging.Logger:
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
    return logger
