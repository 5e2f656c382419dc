"""Credentials the gateway issues: LiveKit access tokens and launch tokens."""

from __future__ import annotations

import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import timedelta

import jwt
from livekit import api

from pipelines.contracts import MODES, DispatchMetadata, Mode

LAUNCH_AUDIENCE = "voicegw:launch"


def room_name(session_id: str) -> str:
    return f"meeting_{session_id}"


def livekit_token(
    *,
    api_key: str,
    api_secret: str,
    session_id: str,
    user: str | None,
    agent_name: str,
    ttl_s: int,
) -> str:
    """A token for the meeting page: join/publish/subscribe/data in the session's room, with an
    explicit dispatch of `agent_name` carrying the session id (LiveKit creates the dispatch
    when the token creates the room)."""
    metadata = DispatchMetadata(session_id=session_id, mode="livekit", user=user)
    room = room_name(session_id)
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(f"page-{session_id}")
        .with_name(user or "Meeting")
        .with_ttl(timedelta(seconds=ttl_s))
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
        .with_room_config(
            api.RoomConfiguration(
                agents=[
                    api.RoomAgentDispatch(
                        agent_name=agent_name, metadata=metadata.model_dump_json()
                    )
                ]
            )
        )
    )
    with warnings.catch_warnings():
        # LiveKit API secrets are LiveKit's to choose (`livekit-server --dev` uses "secret").
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return token.to_jwt()


@dataclass(frozen=True)
class LaunchClaims:
    session_id: str
    user: str | None
    mode: Mode | None


class LaunchTokenError(Exception):
    """A launch token was refused; the message is safe to return."""


def issue_launch_token(
    secret: str, *, session_id: str, user: str | None, mode: Mode | None, ttl_s: int
) -> str:
    now = int(time.time())
    claims = {
        "aud": LAUNCH_AUDIENCE,
        "sid": session_id,
        "usr": user,
        "mode": mode,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_launch_token(secret: str, token: str) -> LaunchClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=LAUNCH_AUDIENCE,
            options={"require": ["exp", "sid", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise LaunchTokenError("launch token expired") from None
    except jwt.InvalidTokenError:
        raise LaunchTokenError("launch token invalid") from None
    mode = claims.get("mode")
    user = claims.get("usr")
    return LaunchClaims(
        session_id=str(claims["sid"]),
        user=str(user) if user is not None else None,
        mode=mode if mode in MODES else None,
    )
