"""Credentials the gateway issues: LiveKit tokens verified with livekit-api, launch tokens."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from livekit import api

from gateway.tokens import (
    LaunchTokenError,
    issue_launch_token,
    livekit_token,
    verify_launch_token,
)
from relay.tickets import issue_ticket

SECRET = "s" * 40
LK_KEY, LK_SECRET = "APIdevkey", "lk-secret-" * 4  # LiveKit Cloud secrets are this long


def test_livekit_token_grants_the_room_and_dispatches_the_agent() -> None:
    token = livekit_token(
        api_key=LK_KEY,
        api_secret=LK_SECRET,
        session_id="abc",
        user="ana@example.com",
        agent_name="voice-agent",
        ttl_s=900,
    )
    claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(token)
    assert claims.identity == "page-abc"
    assert claims.name == "ana@example.com"
    video = claims.video
    assert video is not None
    assert (
        video.room,
        video.room_join,
        video.can_publish,
        video.can_subscribe,
        video.can_publish_data,
    ) == ("meeting_abc", True, True, True, True)
    assert claims.room_config is not None
    [dispatch] = claims.room_config.agents
    assert dispatch.agent_name == "voice-agent"
    assert json.loads(dispatch.metadata) == {
        "session_id": "abc",
        "mode": "livekit",
        "user": "ana@example.com",
    }
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert 890 <= exp - time.time() <= 900


def test_livekit_token_is_rejected_with_another_secret() -> None:
    token = livekit_token(
        api_key=LK_KEY,
        api_secret=LK_SECRET,
        session_id="abc",
        user=None,
        agent_name="voice-agent",
        ttl_s=60,
    )
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(LK_KEY, "other-secret-" * 4).verify(token)


def test_launch_token_round_trip_and_refusals() -> None:
    token = issue_launch_token(
        SECRET, session_id="abc", user="u@x.io", mode="livekit", ttl_s=86_400
    )
    claims = verify_launch_token(SECRET, token)
    assert (claims.session_id, claims.user, claims.mode) == ("abc", "u@x.io", "livekit")
    with pytest.raises(LaunchTokenError, match="invalid"):
        verify_launch_token("y" * 40, token)
    ticket, _ = issue_ticket(SECRET, session_id="abc", user=None)
    with pytest.raises(LaunchTokenError, match="invalid"):
        verify_launch_token(SECRET, ticket)  # a relay ticket is no launch token
    expired = issue_launch_token(SECRET, session_id="abc", user=None, mode=None, ttl_s=-1)
    with pytest.raises(LaunchTokenError, match="expired"):
        verify_launch_token(SECRET, expired)
