"""The issuer without a server: the domain errors it raises (the HTTP layer's mapping of them
is tested in test_app.py)."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest, NotConfigured
from gateway.issuer import SessionIssuer, check_session_id, parse_mode
from pipelines.contracts import load_settings


def test_the_issuer_raises_domain_errors_naming_the_problem() -> None:
    issuer = SessionIssuer(load_settings({"GATEWAY_SECRET": "issuer-test-secret-" * 2}))
    with pytest.raises(NotConfigured) as unconfigured:  # dev without OPENAI_API_KEY
        issuer.issue(session_id="s1", user=None, mode="openai", reason="default", launch=None)
    assert unconfigured.value.code == "mode_unavailable"
    assert "OPENAI_API_KEY" in unconfigured.value.message
    with pytest.raises(InvalidRequest) as mode:
        parse_mode("voice")
    assert (mode.value.code, mode.value.message) == (
        "invalid_mode",
        "mode must be one of: livekit, openai",
    )
    with pytest.raises(InvalidRequest) as session_id:
        check_session_id("not a session id")
    assert session_id.value.code == "invalid_session_id"


@pytest.mark.parametrize(("given", "mode"), [("LiveKit", "livekit"), (" OPENAI ", "openai")])
def test_the_mode_parameter_is_case_insensitive(given: str, mode: str) -> None:
    assert parse_mode(given) == mode
    assert parse_mode("") is None
