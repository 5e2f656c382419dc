"""Access tokens as LiveKit verifies and mints them (livekit `pkg/service/auth.go`,
`protocol/auth`, `protocol/agent` BuildAgentToken).

A token travels as `Authorization: Bearer <jwt>` or, when that header is absent, as the
`access_token` query parameter. It is an HS256 JWT whose issuer is an API key the server knows;
`exp` is required and `exp`/`nbf` are checked with LiveKit's one-minute leeway. Failures carry
the status and text LiveKit answers with (always 401 at this layer). Token values never reach a
log line or an error text.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol.models import ParticipantInfo, ParticipantPermission

_KINDS = {
    "": ParticipantInfo.Kind.STANDARD,
    "standard": ParticipantInfo.Kind.STANDARD,
    "ingress": ParticipantInfo.Kind.INGRESS,
    "egress": ParticipantInfo.Kind.EGRESS,
    "sip": ParticipantInfo.Kind.SIP,
    "agent": ParticipantInfo.Kind.AGENT,
    "connector": ParticipantInfo.Kind.CONNECTOR,
    "bridge": ParticipantInfo.Kind.BRIDGE,
}
AGENT_TOKEN_TTL = datetime.timedelta(hours=1)
# The attribute LiveKit adds to an agent's join token (`agent.AgentNameAttributeKey`).
AGENT_NAME_ATTRIBUTE = "lk.agent_name"


class AuthError(Exception):
    """A refused request: `status` and `message` are what LiveKit sends back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


PERMISSION_DENIED = "permissions denied"


@dataclass(frozen=True)
class Grants:
    """A verified token: its claims, the API key that signed it and when it expires."""

    claims: Claims
    api_key: str
    expires_at: float
    has_video: bool  # the token carries a video grant at all

    @property
    def video(self) -> api.VideoGrants:
        return self.claims.video or api.VideoGrants()

    @property
    def kind(self) -> ParticipantInfo.Kind:
        return _KINDS.get(self.claims.kind or "", ParticipantInfo.Kind.STANDARD)

    @property
    def dependent(self) -> bool:
        """Agents and egress do not keep a room open (`IsDependent`)."""
        kind = self.kind
        if kind in (ParticipantInfo.Kind.AGENT, ParticipantInfo.Kind.EGRESS):
            return True
        return bool(self.video.agent or self.video.recorder)

    def permission(self) -> ParticipantPermission:
        video = self.video
        return ParticipantPermission(
            can_subscribe=video.can_subscribe,
            can_publish=video.can_publish,
            can_publish_data=video.can_publish_data,
            hidden=bool(video.hidden),
            recorder=bool(video.recorder),
            can_update_metadata=bool(video.can_update_own_metadata),
            agent=bool(video.agent),
            can_subscribe_metrics=bool(video.can_subscribe_metrics),
        )


class KeyRing:
    """The API keys the server accepts (`--keys key:secret[,key:secret]`)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        if not keys:
            raise ValueError("at least one API key is required")
        self._keys = dict(keys)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """`key:secret[,key:secret...]`, as livekit-server's `--keys` takes them."""
        keys: dict[str, str] = {}
        for pair in text.split(","):
            key, sep, secret = pair.strip().partition(":")
            if not sep or not key.strip() or not secret.strip():
                raise ValueError("keys must be given as key:secret")
            keys[key.strip()] = secret.strip()
        return cls(keys)

    def secret(self, api_key: str) -> str | None:
        return self._keys.get(api_key)

    def first(self) -> tuple[str, str]:
        key = next(iter(self._keys))
        return key, self._keys[key]

    def verify(self, token: str) -> Grants:
        """The token's grants, or AuthError(401) worded as LiveKit words it."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise AuthError(401, "invalid authorization token") from None
        api_key = unverified.get("iss")
        if not isinstance(api_key, str):
            raise AuthError(401, "invalid API key")
        secret = self._keys.get(api_key)
        if secret is None:
            raise AuthError(401, "invalid API key")
        try:
            claims = api.TokenVerifier(api_key, secret).verify(token)
            expires_at = float(unverified["exp"])
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "invalid authorization token: token is expired (exp)") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "invalid authorization token: token not valid yet (nbf)") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "invalid authorization token: signature is invalid") from None
        except (jwt.InvalidTokenError, TypeError, ValueError, KeyError) as exc:
            raise AuthError(401, f"invalid authorization token: {type(exc).__name__}") from None
        return Grants(
            claims=claims,
            api_key=api_key,
            expires_at=expires_at,
            has_video=isinstance(unverified.get("video"), dict),
        )


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token of a request, header first (LiveKit ignores the query when a header is set).
    A header that is not `Bearer ...` is refused as LiveKit refuses it."""
    header = headers.get("authorization")
    if header:
        if not header.startswith("Bearer "):
            raise AuthError(401, "invalid authorization header. Must start with Bearer ")
        return header[len("Bearer ") :]
    return query.get("access_token") or None


def build_agent_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    name: str,
    metadata: str,
    attributes: Mapping[str, str],
    permission: ParticipantPermission,
) -> str:
    """The join token LiveKit hands a worker with its job (`agent.BuildAgentToken`): the
    worker's allowed permissions as grants, plus roomJoin, the room and `agent`; kind agent;
    valid for one hour."""
    grants = api.VideoGrants(
        room_join=True,
        agent=True,
        room=room,
        can_subscribe=permission.can_subscribe,
        can_publish=permission.can_publish,
        can_publish_data=permission.can_publish_data,
        hidden=permission.hidden,
        can_update_own_metadata=permission.can_update_metadata,
        can_subscribe_metrics=permission.can_subscribe_metrics,
    )
    token = (
        api.AccessToken(api_key, api_secret)
        .with_grants(grants)
        .with_identity(identity)
        .with_name(name)
        .with_kind("agent")
        .with_ttl(AGENT_TOKEN_TTL)
        .with_metadata(metadata)
        .with_attributes(dict(attributes))
    )
    return token.to_jwt()
