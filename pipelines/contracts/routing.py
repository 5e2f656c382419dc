"""Mode resolution's rules: one pure function, DESIGN.md's rules in order, first match wins.

Pure and free of state: the gateway's `Router` (`gateway/router.py`) reads the facts the rules
need (a sticky fallback, the breaker) from its store, asks `resolve_mode`, and owns the one
stateful step (claiming the breaker's probe). It lives beside the contracts because the
configuration asks it too: production requires the credentials of every mode routing can
select (`selectable_modes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mmh3

from .session_config import MODES, Mode, Reason

if TYPE_CHECKING:
    from .settings import Settings


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

    def selectable_modes(self) -> frozenset[Mode]:
        """Every mode `resolve_mode` can return under this policy (and openai, the fallback
        of every livekit session)."""
        if self.force_mode is not None:
            return frozenset({self.force_mode})
        modes: set[Mode] = {self.default_mode}
        if self.allow_override:
            modes |= set(MODES)
        if self.allowlist or self.rollout_percent > 0:
            modes.add("livekit")
        if "livekit" in modes:
            modes.add("openai")
        return frozenset(modes)


def rollout_bucket(key: str) -> int:
    """Unleash-compatible bucket in 1..100: stable for a key on every replica and release."""
    return int(mmh3.hash(f"voice-mode:{key}", signed=False)) % 100 + 1


def resolve_mode(
    policy: RoutingPolicy,
    *,
    session_id: str,
    user: str | None = None,
    requested: Mode | None = None,
    fell_back: bool = False,
    breaker_open: bool = False,
) -> tuple[Mode, Reason]:
    """Which mode a new session takes, and the rule that decided it. `fell_back`: the session's
    page fell back from livekit (it stays on openai for a meeting's length, so its reloads never
    route back into a livekit path that just failed for it); `breaker_open`: the rollback
    breaker blocks this session."""
    if policy.force_mode is not None:
        return policy.force_mode, "forced"
    if fell_back:
        return "openai", "fallback"
    if breaker_open:
        return "openai", "breaker_open"
    if requested is not None and policy.allow_override:
        return requested, "url_flag"
    if user is not None and user.strip().lower() in policy.allowlist:
        return "livekit", "allowlist"
    if rollout_bucket(user or session_id) <= policy.rollout_percent:
        return "livekit", "rollout"
    return policy.default_mode, "default"
