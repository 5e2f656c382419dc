"""Relay tickets: single-use HS256 JWTs that admit one WebSocket to `/v1/realtime`.

The gateway issues them with `/v1/session`; the relay redeems them. A ticket carries the
session id and user, lives at most 60 s, and its `jti` is remembered until it expires so a
replay is refused.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

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


class TicketRedeemer:
    """Verifies tickets and refuses each one's second use (in this process)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._used: dict[str, float] = {}  # jti -> exp

    def redeem(self, token: str | None) -> Ticket:
        if not token:
            raise TicketError(4401, "missing ticket")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                options={"require": ["exp", "jti", "sid", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TicketError(4401, "ticket expired") from None
        except jwt.InvalidTokenError:
            raise TicketError(4401, "invalid ticket") from None
        now = time.time()
        self._used = {jti: exp for jti, exp in self._used.items() if exp > now}
        jti = str(claims["jti"])
        if jti in self._used:
            raise TicketError(4403, "ticket already used")
        self._used[jti] = float(claims["exp"])
        user = claims.get("usr")
        return Ticket(
            session_id=str(claims["sid"]),
            user=str(user) if user is not None else None,
            jti=jti,
            expires_at=float(claims["exp"]),
        )
