"""Issuing sessions: mint the credentials of the mode the router chose, build the session config."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

from pipelines.contracts import (
    MODES,
    Fallback,
    LiveKitCredentials,
    Mode,
    Reason,
    RelayCredentials,
    SessionConfig,
    Settings,
)
from relay.tickets import issue_ticket

from .errors import InvalidRequest, NotConfigured
from .tokens import issue_launch_token, livekit_token, room_name

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)
MAX_USER_LENGTH = 254
RELAY_PATH = "/v1/realtime"


class LaunchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN)
    user: str | None = Field(None, min_length=1, max_length=MAX_USER_LENGTH)
    mode: Mode | None = None
    # The schema says what check_meeting_url requires (its error, invalid_meeting_url, stays
    # the server's: pydantic does not enforce the pattern).
    meeting_url: Annotated[
        str, Field(json_schema_extra={"format": "uri", "pattern": "^https://"})
    ] | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="when given, a Recall.ai bot joins this meeting and loads the page",
    )


class FallbackRequest(BaseModel):
    """`POST /v1/session/fallback`: the page's livekit session failed."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    reason: str = Field(min_length=1, max_length=200)


class LaunchResponse(BaseModel):
    session_id: str
    bot_id: str | None = Field(None, description="the Recall.ai bot, when one was created")
    page_url: str
    mode: Mode = Field(description="the mode routing would choose now (the page asks again)")
    reason: Reason
    expires_at: datetime


def new_session_id() -> str:
    return secrets.token_hex(8)


def check_session_id(value: str) -> str:
    if not _SESSION_ID_RE.fullmatch(value):
        raise InvalidRequest("invalid_session_id", "session_id must be 1-64 of A-Z a-z 0-9 _ -")
    return value


def check_user(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_USER_LENGTH:
        raise InvalidRequest("invalid_user", f"user must be 1-{MAX_USER_LENGTH} characters")
    return value


def parse_mode(value: str | None) -> Mode | None:
    """A `?mode=` value. Case does not matter: people type `LiveKit` into page URLs."""
    if value is None or value.strip() == "":
        return None
    folded = value.strip().lower()
    for mode in MODES:
        if folded == mode:
            return mode
    raise InvalidRequest("invalid_mode", f"mode must be one of: {', '.join(MODES)}")


class SessionIssuer:
    """Mints the credentials of a session the router has decided (it decides no mode)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        assert settings.gateway_secret is not None, "load_settings() fills it in dev"
        self._secret = settings.gateway_secret.get_secret_value()

    @property
    def secret(self) -> str:
        return self._secret

    def issue(
        self,
        *,
        session_id: str,
        user: str | None,
        mode: Mode,
        reason: Reason,
        launch: str | None,
    ) -> SessionConfig:
        missing = self._settings.missing_for(mode)
        if missing:
            raise NotConfigured(
                "mode_unavailable", f"{mode} mode is not configured: {', '.join(missing)}"
            )
        if mode == "livekit":
            return self._livekit_session(session_id, user, reason, launch)
        return self._openai_session(session_id, user, reason)

    def launch(
        self, request: LaunchRequest, *, session_id: str, mode: Mode, reason: Reason
    ) -> LaunchResponse:
        """The launch token and page URL; `mode` and `reason` are the router's preview."""
        ttl = self._settings.launch_token_ttl_seconds
        token = issue_launch_token(
            self._secret, session_id=session_id, user=request.user, mode=request.mode, ttl_s=ttl
        )
        query = {"session": session_id}
        if request.mode is not None:
            query["mode"] = request.mode
        if self._settings.gateway_page_url is not None:
            # A page hosted elsewhere must talk to the gateway that signed its launch token.
            query["gateway"] = self._settings.public_origin
        query["launch"] = token
        return LaunchResponse(
            session_id=session_id,
            page_url=f"{self._settings.page_url}?{urlencode(query)}",
            mode=mode,
            reason=reason,
            expires_at=_utc(time.time() + ttl),
        )

    def _livekit_session(
        self, session_id: str, user: str | None, reason: Reason, launch: str | None
    ) -> SessionConfig:
        s = self._settings
        assert s.livekit_url and s.livekit_api_key and s.livekit_api_secret
        token = livekit_token(
            api_key=s.livekit_api_key.get_secret_value(),
            api_secret=s.livekit_api_secret.get_secret_value(),
            session_id=session_id,
            user=user,
            agent_name=s.livekit_agent_name,
            ttl_s=s.livekit_token_ttl_seconds,
        )
        query = {"session_id": session_id, "mode": "openai"}
        if user is not None:
            query["user"] = user
        if launch is not None:
            query["launch"] = launch
        return SessionConfig(
            session_id=session_id,
            mode="livekit",
            reason=reason,
            livekit=LiveKitCredentials(
                url=s.livekit_url,
                room=room_name(session_id),
                token=token,
                agent_name=s.livekit_agent_name,
            ),
            relay=None,
            fallback=Fallback(mode="openai", session_url=f"/v1/session?{urlencode(query)}"),
            expires_at=_utc(time.time() + s.livekit_token_ttl_seconds),
        )

    def _openai_session(self, session_id: str, user: str | None, reason: Reason) -> SessionConfig:
        ticket, expires_at = issue_ticket(
            self._secret,
            session_id=session_id,
            user=user,
            ttl_s=self._settings.relay_ticket_ttl_seconds,
        )
        return SessionConfig(
            session_id=session_id,
            mode="openai",
            reason=reason,
            livekit=None,
            relay=RelayCredentials(url=RELAY_PATH, ticket=ticket),
            fallback=None,
            expires_at=_utc(expires_at),
        )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)

