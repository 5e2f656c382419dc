"""Relay tickets: single-use HS256 JWTs that admit one WebSocket to `/v1/realtime`.

The gateway issues them with `/v1/session`; the relay redeems them. A ticket carries the
session id and user, lives at most 60 s, and its `jti` is remembered until it expires so a
replay is refused: the relay verifies the signature here and asks its `RelayLedger` (the
gateway's store, shared by every replica with Redis) whether the ticket is still unused.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

import jwt

AUDIENCE = "voicegw:relay"
MAX_TTL_S = 60


@dataclass(frozen=True)
class Ticket:
    session_id: str
    user: str | None
    jti: str
    expires_at: float


class TicketError(Exception):
    """A ticket was refused. `code` is the WebSocket close code to use (4401 or 4403)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def issue_ticket(
    secret: str, *, session_id: str, user: str | None, ttl_s: int = MAX_TTL_S
) -> tuple[str, float]:
    """A signed ticket and its expiry (epoch seconds)."""
    now = int(time.time())
    expires_at = now + min(ttl_s, MAX_TTL_S)
    claims = {
        "aud": AUDIENCE,
        "sid": session_id,
        "usr": user,
        "iat": now,
        "exp": expires_at,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256"), float(expires_at)


def verify_ticket(secret: str, token: str | None) -> Ticket:
    """The ticket `token` carries, if it is genuine and unexpired (TicketError 4401 if not).
    Whether it was used already is the ledger's to say (`RelayLedger.admit_relay`)."""
    if not token:
        raise TicketError(4401, "missing ticket")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp", "jti", "sid", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise TicketError(4401, "ticket expired") from None
    except jwt.InvalidTokenError:
        raise TicketError(4401, "invalid ticket") from None
    user = claims.get("usr")
    return Ticket(
        session_id=str(claims["sid"]),
        user=str(user) if user is not None else None,
        jti=str(claims["jti"]),
        expires_at=float(claims["exp"]),
    )


# What the ledger answers when a verified ticket asks to open a relay session: admitted (the
# ticket is now used and the session holds a slot), used (a replay), full (its session id holds
# its limit of concurrent relay sessions), unavailable (the shared state did not answer: the
# relay fails closed).
Admission = Literal["admitted", "used", "full", "unavailable"]


class RelayLedger(Protocol):
    """The shared state the relay needs: used tickets and concurrent sessions per session id.
    The gateway's stores implement it (in memory, or Redis across replicas). Neither method
    raises: a ledger that cannot answer says "unavailable", and a release it cannot make
    expires with its lease."""

    async def admit_relay(
        self, *, jti: str, expires_at: float, session_id: str, limit: int, lease_s: float
    ) -> tuple[Admission, str | None]:
        """Mark the ticket `jti` used until `expires_at` (epoch seconds) and take one of
        `limit` slots of `session_id` for at most `lease_s`; the outcome and the slot taken."""
        ...

    async def release_relay(self, *, session_id: str, slot: str) -> None:
        """Give back a slot `admit_relay` took."""
        ...
