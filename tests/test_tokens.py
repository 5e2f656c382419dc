"""Credentials: LiveKit tokens verified with livekit-api, relay tickets, launch tokens."""

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
from relay.tickets import TicketError, TicketRedeemer, issue_ticket

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


def test_relay_ticket_is_single_use_and_short_lived() -> None:
    ticket, expires_at = issue_ticket(SECRET, session_id="abc", user="u", ttl_s=300)
    assert expires_at - time.time() <= 60  # capped, whatever was asked
    redeemer = TicketRedeemer(SECRET)
    redeemed = redeemer.redeem(ticket)
    assert (redeemed.session_id, redeemed.user) == ("abc", "u")
    with pytest.raises(TicketError) as again:
        redeemer.redeem(ticket)
    assert again.value.code == 4403


def test_each_ticket_is_unique() -> None:
    first, _ = issue_ticket(SECRET, session_id="abc", user=None)
    second, _ = issue_ticket(SECRET, session_id="abc", user=None)
    assert (
        jwt.decode(first, options={"verify_signature": False})["jti"]
        != jwt.decode(second, options={"verify_signature": False})["jti"]
    )


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "not-a-jwt",
        jwt.encode({"aud": "voicegw:relay", "sid": "a", "jti": "j", "exp": 1}, SECRET),
        jwt.encode({"aud": "voicegw:relay", "sid": "a", "jti": "j", "exp": 2**40}, "x" * 40),
        jwt.encode({"aud": "voicegw:launch", "sid": "a", "jti": "j", "exp": 2**40}, SECRET),
    ],
    ids=["missing", "empty", "garbage", "expired", "forged", "launch-token"],
)
def test_bad_tickets_are_4401(token: str | None) -> None:
    with pytest.raises(TicketError) as caught:
        TicketRedeemer(SECRET).redeem(token)
    assert caught.value.code == 4401


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
