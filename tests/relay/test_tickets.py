"""Relay tickets: short lived, unique, and every bad one refused with 4401 (single use is the
ledger's: tests/gateway/test_store.py against both stores, tests/relay/test_endpoint.py
through the relay)."""

from __future__ import annotations

import time

import jwt
import pytest

from relay.tickets import TicketError, issue_ticket, verify_ticket

SECRET = "s" * 40


def test_relay_ticket_is_short_lived_and_names_its_session() -> None:
    ticket, expires_at = issue_ticket(SECRET, session_id="abc", user="u", ttl_s=300)
    assert expires_at - time.time() <= 60  # capped, whatever was asked
    verified = verify_ticket(SECRET, ticket)
    assert (verified.session_id, verified.user, verified.expires_at) == ("abc", "u", expires_at)


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
        verify_ticket(SECRET, token)
    assert caught.value.code == 4401
