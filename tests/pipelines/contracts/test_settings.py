"""Settings: validated as a whole, secrets never printed, production refuses dev defaults."""

from __future__ import annotations

import logging

import pytest

from pipelines.contracts import ConfigError, load_settings
from pipelines.contracts.routing import RoutingPolicy

PROD = {
    "VOICEGW_ENV": "production",
    "GATEWAY_SECRET": "g" * 40,
    "GATEWAY_API_KEY": "api-key-value-123",
    "GATEWAY_PUBLIC_URL": "https://gw.example.com",
    "OPENAI_API_KEY": "sk-test-openai-value",
    "LIVEKIT_URL": "wss://proj.livekit.cloud",
    "LIVEKIT_API_KEY": "APIkeyvalue",
    "LIVEKIT_API_SECRET": "lk-secret-value-which-is-long-enough",
}


def test_one_message_names_every_bad_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "VOICE_DEFAULT_MODE": "foo",
                "VOICE_LIVEKIT_ROLLOUT_PERCENT": "150",
                "GROQ_BASE_URL": "ftp://example.com",
                "VOICE_ALLOW_MODE_OVERRIDE": "perhaps",
            }
        )
    message = str(caught.value)
    for name in (
        "VOICE_DEFAULT_MODE",
        "VOICE_LIVEKIT_ROLLOUT_PERCENT",
        "GROQ_BASE_URL",
        "VOICE_ALLOW_MODE_OVERRIDE",
    ):
        assert name in message
    assert "foo" not in message and "150" not in message


def test_bad_secret_value_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_SECRET": "too-short-secret-xyz"})
    assert "GATEWAY_SECRET" in str(caught.value)
    assert "too-short-secret-xyz" not in str(caught.value)


def test_dev_defaults_are_filled_and_announced_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="voicegw.settings"):
        settings = load_settings({})
    assert settings.voicegw_env == "dev"
    assert settings.livekit_url == "ws://127.0.0.1:7880"
    assert settings.livekit_api_key is not None
    assert settings.livekit_api_key.get_secret_value() == "devkey"
    assert settings.gateway_secret is not None
    assert len(settings.gateway_secret.get_secret_value()) >= 32
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "DEV MODE" in warnings[0].getMessage()
    secret = settings.gateway_secret.get_secret_value()
    assert all(secret not in r.getMessage() and secret not in str(vars(r)) for r in warnings)


def test_each_dev_start_gets_its_own_secret() -> None:
    first, second = load_settings({}), load_settings({})
    assert first.gateway_secret is not None and second.gateway_secret is not None
    assert first.gateway_secret.get_secret_value() != second.gateway_secret.get_secret_value()


def test_production_names_what_is_missing() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"VOICEGW_ENV": "production"})
    message = str(caught.value)
    for name in (
        "GATEWAY_SECRET",
        "GATEWAY_API_KEY",
        "GATEWAY_PUBLIC_URL",
        "OPENAI_API_KEY",
        "LIVEKIT_API_KEY",
    ):
        assert name in message


def test_production_only_needs_the_modes_routing_can_select() -> None:
    only_openai = {k: v for k, v in PROD.items() if not k.startswith("LIVEKIT")}
    with pytest.raises(ConfigError, match="LIVEKIT_URL"):
        load_settings(only_openai)  # url overrides allowed: livekit is selectable
    settings = load_settings({**only_openai, "VOICE_FORCE_MODE": "openai"})
    assert RoutingPolicy.from_settings(settings).selectable_modes() == {"openai"}
    assert settings.livekit_url is None  # no dev defaults in production


def test_production_accepts_a_complete_environment() -> None:
    settings = load_settings(PROD)
    assert RoutingPolicy.from_settings(settings).selectable_modes() == {"livekit", "openai"}
    assert "sk-test-openai-value" not in repr(settings)
    assert "sk-test-openai-value" not in str(settings.model_dump())


@pytest.mark.parametrize("name", ["GATEWAY_PUBLIC_URL", "GATEWAY_PAGE_URL"])
def test_production_gateway_urls_must_be_https(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**PROD, name: "http://gw.example.com"})
    assert f"{name}: must be an https URL in production" in str(caught.value)
    load_settings({**PROD, name: "https://gw.example.com"})
    load_settings({name: "http://gw.example.com"})  # dev
    load_settings({**PROD, name: "http://127.0.0.1:8080"})  # this machine, as for the page


def test_the_page_url_is_the_gateway_unless_hosted_elsewhere() -> None:
    assert load_settings({}).page_url == "http://127.0.0.1:8080/"
    elsewhere = load_settings({"GATEWAY_PAGE_URL": "https://page.example.com"})
    assert elsewhere.page_url == "https://page.example.com/"
    with pytest.raises(ConfigError, match="GATEWAY_PAGE_URL"):
        load_settings({"GATEWAY_PAGE_URL": "https://page.example.com/?session=x"})


def test_allowlist_parsing_and_empty_values_mean_unset() -> None:
    settings = load_settings(
        {"VOICE_LIVEKIT_ALLOWLIST": " Ana@Example.com, bob ,,", "VOICE_FORCE_MODE": ""}
    )
    assert settings.allowlist == {"ana@example.com", "bob"}
    assert settings.voice_force_mode is None
    assert "livekit" in RoutingPolicy.from_settings(settings).selectable_modes()


def test_selectable_modes_follow_the_routing_rules() -> None:
    closed = {"VOICE_ALLOW_MODE_OVERRIDE": "false"}
    assert RoutingPolicy.from_settings(load_settings(closed)).selectable_modes() == {"openai"}
    rollout = load_settings({**closed, "VOICE_LIVEKIT_ROLLOUT_PERCENT": "5"})
    # openai: the fallback of every livekit session
    assert RoutingPolicy.from_settings(rollout).selectable_modes() == {"livekit", "openai"}


def test_urls_are_normalised() -> None:
    settings = load_settings({"N8N_WEBHOOK_BASE_URL": "https://n8n.example.com/webhook/"})
    assert settings.n8n_webhook_base_url == "https://n8n.example.com/webhook"


def test_cors_origins_are_normalised_origins() -> None:
    settings = load_settings(
        {"GATEWAY_CORS_ORIGINS": " HTTPS://Page.Example.com/ ,http://127.0.0.1:5173,,"}
    )
    assert settings.cors_origins == ("https://page.example.com", "http://127.0.0.1:5173")
    assert load_settings({}).cors_origins == ()
    default_port = load_settings({"GATEWAY_CORS_ORIGINS": "https://page.example.com:443"})
    assert default_port.cors_origins == ("https://page.example.com",)


@pytest.mark.parametrize(
    "value", ["*", "page.example.com", "https://page.example.com/app", "ftp://page.example.com"]
)
def test_cors_origins_refuse_what_is_not_an_origin(value: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_CORS_ORIGINS"):
        load_settings({"GATEWAY_CORS_ORIGINS": f"https://ok.example.com,{value}"})
