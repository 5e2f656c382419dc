"""The services each process talks to, and what it says about them when it starts.

One line per provider at start-up: real (where it is), simulated (where its simulator runs),
or missing (which variables, and what does not work without it). In dev, `voicegw serve`
simulates exactly the providers that have no key (`to_simulate`; LiveKit: the stand-in and an
agent worker, unless LIVEKIT_URL is set) and says which, so setting one key never silently
turns the others off.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipelines.contracts import Settings
from pipelines.contracts.settings import (
    DEV_LIVEKIT_API_KEY,
    DEV_LIVEKIT_API_SECRET,
    DEV_LIVEKIT_URL,
    Process,
)

log = logging.getLogger("voicegw.providers")


@dataclass(frozen=True)
class Provider:
    name: str
    needs: tuple[str, ...]  # the variables that make it usable (keys; n8n's is its URL)
    url: str  # the variable that says where it is
    used_by: frozenset[Process]
    without: str  # what does not work without it
    simulated_in_dev: bool = True  # `voicegw serve` has a simulator for it
    voice: bool = False  # a TTS_PROVIDER / TTS_FALLBACK_PROVIDER choice: needed only if chosen

    @property
    def variables(self) -> tuple[str, ...]:
        """Every variable a simulator of it sets."""
        return tuple(dict.fromkeys((*self.needs, self.url)))

    def missing(self, settings: Settings) -> list[str]:
        return [name for name in self.needs if settings.value_of(name) is None]

    def chosen(self, settings: Settings) -> bool:
        """Whether the settings use it (a voice nobody chose is missed by no one)."""
        return not self.voice or self.name in (
            settings.tts_provider,
            settings.tts_fallback_provider,
        )


GATEWAY: frozenset[Process] = frozenset({"gateway"})
AGENT: frozenset[Process] = frozenset({"agent"})

PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "openai_realtime",
        ("OPENAI_API_KEY",),
        "OPENAI_REALTIME_URL",
        GATEWAY,
        "openai mode: sessions are refused (503), and livekit sessions have no fallback",
    ),
    Provider(
        "deepgram",
        ("DEEPGRAM_API_KEY",),
        "DEEPGRAM_BASE_URL",
        AGENT,
        "livekit mode: the agent hears nothing (speech to text)",
    ),
    Provider(
        "groq",
        ("GROQ_API_KEY",),
        "GROQ_BASE_URL",
        AGENT,
        "livekit mode: the agent cannot answer (language model)",
    ),
    Provider(
        "chatterbox",
        ("CHATTERBOX_API_KEY",),
        "CHATTERBOX_BASE_URL",
        AGENT,
        "livekit mode: the agent cannot speak (text to speech)",
        voice=True,
    ),
    Provider(
        "cartesia",
        ("CARTESIA_API_KEY",),
        "CARTESIA_BASE_URL",
        AGENT,
        "livekit mode: the cartesia voice cannot speak (TTS_PROVIDER / TTS_FALLBACK_PROVIDER)",
        voice=True,
    ),
    Provider(
        "elevenlabs",
        ("ELEVENLABS_API_KEY",),
        "ELEVENLABS_BASE_URL",
        AGENT,
        "livekit mode: the elevenlabs voice cannot speak (TTS_PROVIDER / TTS_FALLBACK_PROVIDER)",
        voice=True,
    ),
    Provider(
        "n8n",
        ("N8N_WEBHOOK_BASE_URL",),
        "N8N_WEBHOOK_BASE_URL",
        GATEWAY | AGENT,
        "tools: every tool call fails, in both modes",
    ),
    Provider(
        "livekit",
        ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"),
        "LIVEKIT_URL",
        GATEWAY | AGENT,
        "livekit mode: sessions are refused (503)",
    ),
    Provider(
        "recall",
        ("RECALL_API_KEY",),
        "RECALL_API_BASE",
        GATEWAY,
        "POST /v1/launch with a meeting_url is refused (503): no bot joins a meeting",
        simulated_in_dev=False,
    ),
)
SIMULATED_IN_DEV = frozenset(p.name for p in PROVIDERS if p.simulated_in_dev)
# What `simulated_stack` serves: LiveKit's stand-in and its worker are `simulated_livekit`'s.
PROVIDER_SIMULATORS = SIMULATED_IN_DEV - {"livekit"}


def to_simulate(settings: Settings, simulate: bool | None) -> frozenset[str]:
    """The providers `voicegw serve` runs as local simulators. Production: none. `--simulate`:
    all it can; `--no-simulate`: none. Otherwise, in dev, exactly those without a key."""
    if settings.voicegw_env == "production" or simulate is False:
        return frozenset()
    if simulate:
        return SIMULATED_IN_DEV
    return frozenset(
        p.name for p in PROVIDERS if p.simulated_in_dev and _unconfigured(p, settings)
    )


def _unconfigured(provider: Provider, settings: Settings) -> bool:
    """Nothing set for it. LiveKit always has values in dev (`livekit-server --dev`'s): left
    at exactly those, it is the stand-in's; a LIVEKIT_URL of one's own is a real server."""
    if provider.name == "livekit":
        return settings.livekit_url == DEV_LIVEKIT_URL and _dev_livekit(settings)
    return bool(provider.missing(settings))


def simulated_variables(names: Collection[str]) -> frozenset[str]:
    """The variables the simulators of `names` set."""
    return frozenset(v for p in PROVIDERS if p.name in names for v in p.variables)


def report(
    settings: Settings, used_by: Iterable[Process], simulated: Collection[str] = ()
) -> None:
    """One line per provider the processes in `used_by` talk to. `settings` are the ones the
    process runs on (pointed at the simulators, for those in `simulated`)."""
    processes = set(used_by)
    for provider in PROVIDERS:
        if not processes & provider.used_by or not provider.chosen(settings):
            continue
        where = _host(settings.value_of(provider.url))
        extra: dict[str, object] = {"provider": provider.name}
        missing = provider.missing(settings)
        if provider.name in simulated:
            log.info("provider simulated", extra={**extra, "at": where})
        elif missing:
            log.warning(
                "provider missing",
                extra={**extra, "missing": missing, "without_it": provider.without},
            )
        else:
            extra["at"] = where
            if provider.name == "livekit" and _dev_livekit(settings):
                extra["credentials"] = "livekit-server --dev"
            log.info("provider real", extra=extra)


def report_simulation(simulated: Collection[str], *, every: bool) -> None:
    """The rule that decided what is simulated, in one warning (nothing when nothing is)."""
    if not simulated:
        return
    real = sorted(p.name for p in PROVIDERS if p.simulated_in_dev and p.name not in simulated)
    rule = "--simulate: every provider" if every else "dev: each provider without a key"
    log.warning(
        "SIMULATED PROVIDERS: what the simulated providers say is made up locally",
        extra={"simulated": sorted(simulated), "real": real, "rule": rule},
    )


def report_routing(settings: Settings) -> None:
    """How sessions are routed, and the kill switch when it is on."""
    log.info(
        "routing",
        extra={
            "default_mode": settings.voice_default_mode,
            "force_mode": settings.voice_force_mode,
            "url_override": settings.voice_allow_mode_override,
            "livekit_rollout_percent": settings.voice_livekit_rollout_percent,
            "livekit_allowlist": len(settings.allowlist),
        },
    )
    if settings.voice_force_mode is not None:
        log.warning(
            "KILL SWITCH: VOICE_FORCE_MODE sends every new session to one mode",
            extra={"force_mode": settings.voice_force_mode},
        )


def _host(value: object | None) -> str | None:
    """Where a URL points, without its path, query or credentials."""
    if value is None:
        return None
    parts = urlsplit(str(value))
    if parts.hostname is None:
        return None
    return parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"


def _dev_livekit(settings: Settings) -> bool:
    key, secret = settings.livekit_api_key, settings.livekit_api_secret
    return (
        key is not None
        and secret is not None
        and key.get_secret_value() == DEV_LIVEKIT_API_KEY
        and secret.get_secret_value() == DEV_LIVEKIT_API_SECRET
    )
