"""Mode resolution: one pure function, DESIGN.md's six rules, first match wins."""

from __future__ import annotations

from dataclasses import dataclass

import mmh3

from pipelines.contracts import Mode, Reason, Settings


@dataclass(frozen=True)
class RoutingPolicy:
    """The ops rules, as read from the environment at start-up."""

    default_mode: Mode = "openai"
    force_mode: Mode | None = None
    allow_override: bool = True
    rollout_percent: int = 0
    allowlist: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutingPolicy:
        return cls(
            default_mode=settings.voice_default_mode,
            force_mode=settings.voice_force_mode,
            allow_override=settings.voice_allow_mode_override,
            rollout_percent=settings.voice_livekit_rollout_percent,
            allowlist=settings.allowlist,
        )


def rollout_bucket(key: str) -> int:
    """Unleash-compatible bucket in 1..100: stable for a key on every replica and release."""
    return int(mmh3.hash(f"voice-mode:{key}", signed=False)) % 100 + 1


def resolve_mode(
    policy: RoutingPolicy,
    *,
    session_id: str,
    user: str | None = None,
    requested: Mode | None = None,
    breaker_open: bool = False,
) -> tuple[Mode, Reason]:
    """Which mode a new session takes, and the rule that decided it."""
    if policy.force_mode is not None:
        return policy.force_mode, "forced"
    if breaker_open:
        return "openai", "breaker_open"
    if requested is not None and policy.allow_override:
        return requested, "url_flag"
    if user is not None and user.strip().lower() in policy.allowlist:
        return "livekit", "allowlist"
    if rollout_bucket(user or session_id) <= policy.rollout_percent:
        return "livekit", "rollout"
    return policy.default_mode, "default"
