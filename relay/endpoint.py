"""`WS /v1/realtime`: admit a client with its relay ticket, then run a `RelaySession`.

The ticket is taken from `?ticket=`, `Authorization: Bearer`, or the
`openai-insecure-api-key.<ticket>` subprotocol (what browser Realtime clients send; the socket
is then answered with the `realtime` subprotocol), so the official OpenAI SDKs connect through
the relay unchanged. A refused ticket closes the socket with 4401/4403 before any upstream
connection is opened.
"""

from __future__ import annotations

import gc
import logging
import re
from urllib.parse import parse_qsl, urlencode

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from .client_leg import open_client_leg
from .config import RelayConfig
from .session import RelaySession
from .tickets import TicketError, TicketRedeemer

log = logging.getLogger("voicegw.relay")

# Query parameters whose values may be logged; every other value is a possible credential
# (`ticket` in any spelling the server decodes, `launch`, or anything else).
_LOGGABLE_PARAMS = frozenset({"mode", "model"})
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

_SECRET_HEADERS = frozenset({"authorization", "sec-websocket-protocol"})

SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


class RelayEndpoint:
    """The relay's ASGI WebSocket app; mount it with `WebSocketRoute("/v1/realtime", ...)`."""

    def __init__(self, config: RelayConfig, *, redeemer: TicketRedeemer | None = None) -> None:
        """One per process: the redeemer remembers used tickets, so it must be shared."""
        self.config = config
        self._redeemer = redeemer or TicketRedeemer(config.ticket_secret)
        # Everything imported so far (the openai SDK's types alone are ~100k objects) lives as
        # long as the process. Left in the collector's generations, each full collection walks
        # them all: a ~65 ms stall of every live session, the relay's worst latency tail.
        gc.freeze()
        redact_secrets_in(logging.getLogger("uvicorn.error"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        token, subprotocol = credentials(websocket)
        try:
            ticket = self._redeemer.redeem(token)
        except TicketError as exc:
            log.info("relay ticket refused", extra={"close_code": exc.code, "why": exc.reason})
            await websocket.accept(subprotocol=subprotocol)
            await websocket.close(exc.code, exc.reason)
            return
        session = RelaySession(session_id=ticket.session_id, config=self.config)
        leg = open_client_leg(
            websocket, receive, send, session, max_size=self.config.limits.max_frame_bytes
        )
        await session.run(leg, subprotocol)


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
