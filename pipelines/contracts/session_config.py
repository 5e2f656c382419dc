"""The session config the gateway returns from `/v1/session` (contract version 1)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

CONTRACT_VERSION: Literal[1] = 1

Mode = Literal["livekit", "openai"]
MODES: tuple[Mode, ...] = get_args(Mode)

# The routing rules of DESIGN.md, plus "fallback": a session the page asked for after its
# livekit session failed (`POST /v1/session/fallback`), which is openai whatever the rules say.
Reason = Literal[
    "forced", "breaker_open", "url_flag", "allowlist", "rollout", "default", "fallback"
]
REASONS: tuple[Reason, ...] = get_args(Reason)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LiveKitCredentials(_Model):
    url: str = Field(description="LiveKit server URL the page joins")
    room: str = Field(description="room name, meeting_<session_id>")
    token: str = Field(description="LiveKit access token (JWT) for this page")
    agent_name: str = Field(description="name of the agent dispatched into the room")


class RelayCredentials(_Model):
    url: str = Field(description="path of the relay WebSocket, relative to the gateway")
    ticket: str = Field(description="single-use relay ticket (JWT, <= 60 s)")


class Fallback(_Model):
    mode: Mode
    session_url: str = Field(description="gateway URL that returns the fallback session config")


class SessionConfig(_Model):
    contract_version: Literal[1] = CONTRACT_VERSION
    session_id: str
    mode: Mode
    reason: Reason = Field(description="which routing rule decided the mode")
    livekit: LiveKitCredentials | None
    relay: RelayCredentials | None
    fallback: Fallback | None
    expires_at: datetime = Field(description="when the credentials stop being accepted")


class DispatchMetadata(_Model):
    """JSON metadata of the explicit agent dispatch carried by the LiveKit token."""

    session_id: str
    mode: Mode
    user: str | None = None
