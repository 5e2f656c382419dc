"""Configuration: every environment variable of DESIGN.md, read once and validated as a whole.

It lives beside the contracts because both processes read it: the gateway (routing, tokens,
relay) and the LiveKit worker (providers). Each builds its own explicit options from it at the
edge; nothing below the edge reads the environment.
"""

from __future__ import annotations

import logging
import secrets
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .routing import RoutingPolicy
from .session_config import Mode
from .validation import validation_problems

log = logging.getLogger("voicegw.settings")

Env = Literal["dev", "production"]
# The livekit pipeline's voices: the plan's Chatterbox and its named alternatives.
TtsProvider = Literal["chatterbox", "cartesia", "elevenlabs"]
TTS_PROVIDERS: tuple[TtsProvider, ...] = get_args(TtsProvider)
# What the agent may start before the final transcript (pipelines/livekit/speculation.py).
Speculation = Literal["off", "pause", "interims"]
# Which process reads the settings: each one requires what it uses (README "Configuration").
# The lab (`voicegw talk`, `compare`) runs both modes in-process for one conversation; a
# client (`voicegw launch --gateway`) only talks to a running gateway.
Process = Literal["gateway", "agent", "lab", "client"]

DEV_LIVEKIT_URL = "ws://127.0.0.1:7880"
DEV_LIVEKIT_API_KEY = "devkey"
DEV_LIVEKIT_API_SECRET = "secret"  # what `livekit-server --dev` accepts; not a real secret

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# What each mode needs before routing may select it (environment variable names).
MODE_REQUIREMENTS: dict[Mode, tuple[str, ...]] = {
    "livekit": ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"),
    "openai": ("OPENAI_API_KEY",),
}

_SCHEMES = {
    "gateway_public_url": ("http", "https"),
    "livekit_url": ("ws", "wss", "http", "https"),
    "deepgram_base_url": ("ws", "wss", "http", "https"),
    "groq_base_url": ("http", "https"),
    "chatterbox_base_url": ("http", "https"),
    "openai_realtime_url": ("ws", "wss"),
    "n8n_webhook_base_url": ("http", "https"),
    "recall_api_base": ("http", "https"),
    "fallback_tts_base_url": ("http", "https"),
    "cartesia_base_url": ("http", "https"),
    "elevenlabs_base_url": ("http", "https"),
}


# DATABASE_URL: PostgreSQL through asyncpg, SQLite through aiosqlite (`history/database.py`).
DATABASE_SCHEMES = frozenset(
    {"postgresql", "postgres", "postgresql+asyncpg", "sqlite", "sqlite+aiosqlite"}
)
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class ConfigError(Exception):
    """The environment is not a usable configuration. The message names variables, never values."""


class Settings(BaseSettings):
    """All configuration. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True, extra="ignore", frozen=True, validate_default=True
    )

    voicegw_env: Env = "dev"

    # Routing (DESIGN.md "Mode resolution").
    voice_default_mode: Mode = "openai"
    voice_force_mode: Mode | None = None
    voice_allow_mode_override: bool = True
    voice_livekit_rollout_percent: int = Field(0, ge=0, le=100)
    voice_livekit_allowlist: str = ""

    # Gateway.
    gateway_secret: SecretStr | None = None
    gateway_api_key: SecretStr | None = None
    gateway_public_url: str = "http://127.0.0.1:8080"
    # Where the meeting page is served when it is not the gateway's own `/` (a static host):
    # launch page URLs point there and name this gateway (`?gateway=`).
    gateway_page_url: str | None = None
    livekit_token_ttl_seconds: int = Field(900, ge=60, le=86_400)
    relay_ticket_ttl_seconds: int = Field(60, ge=5, le=60)
    launch_token_ttl_seconds: int = Field(86_400, ge=60, le=7 * 86_400)
    # Origins of pages hosted elsewhere that may call the gateway (comma-separated); none: only
    # the page the gateway serves itself.
    gateway_cors_origins: str = ""

    # LiveKit.
    livekit_url: str | None = None
    livekit_api_key: SecretStr | None = None
    livekit_api_secret: SecretStr | None = None
    livekit_agent_name: str = Field("voice-agent", min_length=1)

    # Providers of the livekit pipeline.
    deepgram_api_key: SecretStr | None = None
    deepgram_base_url: str = "https://api.deepgram.com/v1/listen"
    groq_api_key: SecretStr | None = None
    groq_base_url: str = "https://api.groq.com/openai/v1"
    groq_model: str = Field("llama-3.1-8b-instant", min_length=1)
    chatterbox_api_key: SecretStr | None = None
    chatterbox_base_url: str = "https://api.chatterboxtts.com/v1"
    chatterbox_voice: str = Field("professional", min_length=1)
    chatterbox_model: str = Field("turbo", min_length=1)
    tts_provider: TtsProvider = "chatterbox"
    tts_fallback_provider: TtsProvider | None = None
    cartesia_api_key: SecretStr | None = None
    cartesia_base_url: str = "https://api.cartesia.ai"
    cartesia_model: str = Field("sonic-3", min_length=1)
    cartesia_voice: str = Field("f786b574-daa5-4673-aa0c-cbe3e8534c02", pattern=_UUID)
    elevenlabs_api_key: SecretStr | None = None
    elevenlabs_base_url: str = "https://api.elevenlabs.io/v1"
    elevenlabs_model: str = Field("eleven_flash_v2_5", min_length=1)
    elevenlabs_voice: str = Field("hpp4J3VqNfWAUOO0d1Us", pattern=r"^[A-Za-z0-9]{20}$")

    # Legacy mode upstream.
    openai_api_key: SecretStr | None = None
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_realtime_model: str = Field("gpt-realtime", min_length=1)
    openai_realtime_voice: str = Field("marin", min_length=1)

    # Tools and launcher.
    n8n_webhook_base_url: str | None = None
    n8n_timeout_seconds: float = Field(8.0, gt=0, le=60)
    recall_api_key: SecretStr | None = None
    recall_api_base: str = "https://us-west-2.recall.ai"

    # -- relay (legacy mode) -------------------------------------------------------------
    openai_turn_detection: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    openai_vad_threshold: float = Field(0.5, ge=0, le=1)
    openai_vad_silence_ms: int = Field(500, ge=100, le=5_000)
    openai_vad_prefix_padding_ms: int = Field(300, ge=0, le=5_000)
    openai_transcription_model: str = Field("gpt-4o-mini-transcribe", min_length=1)
    relay_max_frame_bytes: int = Field(2 * 1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    relay_max_messages_per_second: int = Field(200, ge=10, le=10_000)
    relay_max_session_seconds: float = Field(55 * 60, gt=0, le=24 * 3600)
    relay_client_stall_seconds: float = Field(5.0, gt=0, le=60)
    relay_upstream_open_timeout_seconds: float = Field(10.0, gt=0, le=60)
    # A hung OpenAI (or path to it) sends nothing: ping it, and end the session without a pong.
    relay_upstream_ping_interval_seconds: float = Field(5.0, gt=0, le=300)
    relay_upstream_ping_timeout_seconds: float = Field(5.0, gt=0, le=300)

    # -- the gateway's HTTP server (README "Security") -------------------------------------
    http_max_header_bytes: int = Field(16 * 1024, ge=4 * 1024, le=1024 * 1024)
    http_max_headers: int = Field(100, ge=20, le=1000)
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(30.0, gt=0, le=600)

    # -- livekit pipeline ----------------------------------------------------------------
    vad_min_speech_seconds: float = Field(0.1, ge=0, le=2)
    vad_min_silence_seconds: float = Field(0.3, gt=0, le=3)
    vad_activation_threshold: float = Field(0.5, gt=0, lt=1)
    vad_deactivation_threshold: float | None = Field(0.5, gt=0, lt=1)
    endpointing_min_delay: float = Field(0.2, ge=0, le=5)
    endpointing_max_delay: float = Field(3.0, gt=0, le=30)
    preemptive_generation: bool = True
    preemptive_tts: bool = True
    speculation: Speculation = "pause"
    speculation_pause_ms: int = Field(60, ge=10, le=1000)
    tts_chunks: Literal["clauses", "sentences"] = "clauses"
    deepgram_model: str = Field("nova-3", min_length=1)
    deepgram_language: str = Field("en-US", min_length=1)
    deepgram_endpointing_ms: int = Field(25, ge=0, le=10_000)
    groq_temperature: float = Field(0.7, ge=0, le=2)
    groq_max_tokens: int = Field(256, ge=1, le=8192)
    tool_filler_ms: int = Field(400, ge=0, le=60_000)
    tool_filler_text: str = Field("One moment.", min_length=1)
    stt_transcript_timeout_seconds: float = Field(2.0, gt=0, le=30)
    fallback_tts_base_url: str | None = None  # a second Chatterbox-compatible server
    fallback_tts_api_key: SecretStr | None = None

    # -- operations: launcher, breaker, observability -------------------------------------
    recall_bot_name: str = Field("Meeting Assistant", min_length=1, max_length=100)
    # Recall.ai's Teams bot variant; web_4_core gives the output_media page CPU for audio work.
    recall_variant: Literal["web", "web_4_core", "web_gpu"] = "web_4_core"
    recall_timeout_seconds: float = Field(15.0, gt=0, le=120)
    breaker_failure_threshold: int = Field(3, ge=1, le=1000)
    breaker_window_seconds: float = Field(60.0, gt=0, le=3600)
    breaker_cooldown_seconds: float = Field(60.0, gt=0, le=86_400)
    breaker_probe_window_seconds: float = Field(60.0, gt=0, le=3600)
    livekit_probe_interval_seconds: float = Field(0.0, ge=0, le=3600)  # 0: no active probe
    # Re-dispatch the agent when a page re-joins a live room; unset: on in production only.
    livekit_dispatch_check: bool | None = None
    metrics_port: int = Field(9100, ge=1, le=65_535)  # the LiveKit worker's /metrics
    # The worker's capacity: it reports active sessions / this as its load and is full at 1.
    agent_max_sessions: int = Field(4, ge=1, le=1000)
    agent_health_port: int = Field(8081, ge=0, le=65_535)  # `start` only; 0: any free port

    # -- several replicas: shared state, and what one caller may use ----------------------
    # Unset: state in this process's memory (one replica). A secret: it may carry a password.
    redis_url: SecretStr | None = None
    redis_key_prefix: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    # Bound on each call to Redis; beyond it the call counts as failed (DESIGN.md, README
    # "Several replicas").
    redis_timeout_seconds: float = Field(0.5, gt=0, le=10)
    # `/v1/session` and `/v1/session/fallback` per launch token (per client address without one).
    session_rate_limit: int = Field(30, ge=1, le=100_000)
    session_rate_window_seconds: float = Field(60.0, gt=0, le=3600)
    # Concurrent relay sessions one session id may hold (a reload overlaps the closing one).
    relay_max_sessions_per_id: int = Field(2, ge=1, le=100)

    # -- session history (README "Session history") ---------------------------------------
    # PostgreSQL for several replicas and agent services; unset: a SQLite file under
    # VOICEGW_DATA_DIR. A secret: it may carry a password.
    database_url: SecretStr | None = None
    voicegw_data_dir: str = Field("data", min_length=1)
    history_enabled: bool = True
    history_transcripts: bool = True  # false: keep everything but what people said
    history_retention_days: int = Field(30, ge=1, le=3650)
    history_queue_size: int = Field(10_000, ge=10, le=1_000_000)

    @field_validator("gateway_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # Says nothing of the value, not even its length.
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        # Names the schemes, never the URL (it may carry a password).
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        # Names the schemes, never the URL (it may carry a password).
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in DATABASE_SCHEMES:
                raise ValueError("must be a postgresql:// or sqlite:/// URL")
        return value

    @field_validator(*_SCHEMES)
    @classmethod
    def _url_scheme(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        name = info.field_name or ""
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES[name] or not parts.netloc:
            raise ValueError(f"must be a {'/'.join(_SCHEMES[name])} URL")
        return value.rstrip("/")

    @field_validator("gateway_cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        return ",".join(_origin(item) for item in value.split(",") if item.strip())

    @field_validator("gateway_page_url")
    @classmethod
    def _page_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ValueError("must be an http/https URL of the page, without query or fragment")
        return value if parts.path else value + "/"

    @model_validator(mode="after")
    def _two_distinct_voices(self) -> Settings:
        fallback = self.tts_fallback_provider
        if self.fallback_tts_base_url is not None and fallback not in (None, "chatterbox"):
            raise ValueError(
                "FALLBACK_TTS_BASE_URL is a second Chatterbox server: it needs "
                "TTS_FALLBACK_PROVIDER=chatterbox (or unset)"
            )
        if fallback == self.tts_provider and not (
            fallback == "chatterbox" and self.fallback_tts_base_url is not None
        ):
            raise ValueError(
                "TTS_FALLBACK_PROVIDER must differ from TTS_PROVIDER (or, for a second "
                "Chatterbox server, set FALLBACK_TTS_BASE_URL)"
            )
        return self

    # -- derived views -------------------------------------------------------------------

    @property
    def allowlist(self) -> frozenset[str]:
        """Allowlisted user ids or e-mail addresses, lower-cased."""
        items = (item.strip().lower() for item in self.voice_livekit_allowlist.split(","))
        return frozenset(item for item in items if item)

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """Origins allowed to call the gateway from a page hosted elsewhere (normalized)."""
        return tuple(item for item in self.gateway_cors_origins.split(",") if item)

    def value_of(self, env_name: str) -> object | None:
        """The configured value of an environment variable name (None when unset)."""
        value: object | None = getattr(self, env_name.lower())
        return value

    @property
    def page_url(self) -> str:
        """The meeting page's URL, before its query: GATEWAY_PAGE_URL, or the gateway's `/`."""
        return self.gateway_page_url or f"{self.gateway_public_url}/"

    @property
    def public_origin(self) -> str:
        """The gateway's origin as a browser names it (what a page's `?gateway=` holds)."""
        parts = urlsplit(self.gateway_public_url)
        return f"{parts.scheme}://{parts.netloc}"

    def missing_for(self, mode: Mode) -> list[str]:
        """Names of the variables `mode` needs that are not set."""
        return [name for name in MODE_REQUIREMENTS[mode] if self.value_of(name) is None]


def _origin(item: str) -> str:
    """One allowlisted origin, as browsers send it in `Origin`: scheme://host[:port]."""
    text = item.strip()
    if text == "*":
        raise ValueError("list the origins; * is not accepted")
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(f"{text!r} is not an origin like https://app.example.com")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port not in (None, default_port) else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def load_settings(
    environ: dict[str, str] | None = None,
    *,
    process: Process = "gateway",
    dev_defaults: bool = True,
) -> Settings:
    """Read and validate the environment (or `environ`) for `process`, raising ConfigError
    naming every bad variable. In production the gateway refuses to start without what it
    uses (`gateway_problems`); the agent checks its own needs where it starts
    (`voicegw.agent`). In dev (unless `dev_defaults` is off), unset LiveKit credentials are
    `livekit-server --dev`'s and the gateway gets an ephemeral GATEWAY_SECRET; the gateway
    says so in one warning."""
    try:
        if environ is None:
            settings = Settings()
        else:
            settings = Settings.model_validate(
                {k.lower(): v for k, v in environ.items() if v != ""}
            )
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if settings.voicegw_env == "production":
        problems = gateway_problems(settings) if process == "gateway" else []
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return settings
    if not dev_defaults or process == "client":
        return settings
    return _with_dev_defaults(settings, process)


def gateway_problems(settings: Settings) -> list[str]:
    """What a production gateway lacks: its secrets, a public https URL, and the credentials of
    every mode routing can select (variable names, never values)."""
    missing = [n for n in ("GATEWAY_SECRET", "GATEWAY_API_KEY") if settings.value_of(n) is None]
    if "gateway_public_url" not in settings.model_fields_set:
        missing.append("GATEWAY_PUBLIC_URL")
    for mode in sorted(RoutingPolicy.from_settings(settings).selectable_modes()):
        missing += settings.missing_for(mode)
    problems = [f"production requires {', '.join(dict.fromkeys(missing))}"] if missing else []
    # Recall.ai's bot loads the page over the internet, and a page gets a microphone only
    # from an https origin; the page refuses an http gateway for the same reason. As there,
    # this machine is the exception (a browser trusts it; tests run production here).
    for name in ("GATEWAY_PUBLIC_URL", "GATEWAY_PAGE_URL"):
        if name.lower() not in settings.model_fields_set:
            continue
        parts = urlsplit(str(settings.value_of(name)))
        if parts.scheme != "https" and parts.hostname not in _LOOPBACK:
            problems.append(f"{name}: must be an https URL in production")
    return problems


def _describe(exc: ValidationError) -> str:
    """Every bad variable by its environment name (a field is a variable, lower-cased)."""
    problems = [
        f"{where.split('.')[0].upper()}: {what.removeprefix('Value error, ')}"
        if where
        else what.removeprefix("Value error, ")
        for where, what in validation_problems(exc)
    ]
    return "invalid configuration: " + "; ".join(problems)


def _with_dev_defaults(settings: Settings, process: Process) -> Settings:
    filled: dict[str, object] = {}
    if process in ("gateway", "lab") and settings.gateway_secret is None:
        filled["gateway_secret"] = SecretStr(secrets.token_urlsafe(32))
    if settings.livekit_url is None:
        filled["livekit_url"] = DEV_LIVEKIT_URL
    if settings.livekit_api_key is None:
        filled["livekit_api_key"] = SecretStr(DEV_LIVEKIT_API_KEY)
    if settings.livekit_api_secret is None:
        filled["livekit_api_secret"] = SecretStr(DEV_LIVEKIT_API_SECRET)
    if not filled:
        return settings
    if process != "gateway":  # nothing outlives the lab; the agent names its LiveKit itself
        return settings.model_copy(update=filled)
    log.warning(
        "DEV MODE: using generated or livekit-server --dev defaults for unset variables; "
        "sessions will not survive a restart and this is not fit for production",
        extra={"defaulted": sorted(name.upper() for name in filled)},
    )
    return settings.model_copy(update=filled)
