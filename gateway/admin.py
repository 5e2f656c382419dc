"""The admin view (`GET /v1/admin/routing`): what routing does now and what it has done.

Per process: counts are since this gateway started, and the breaker is this replica's.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel, Field

from pipelines.contracts import Mode, Reason

from .breaker import BreakerSnapshot, BreakerState
from .routing import RoutingPolicy


class RoutingRules(BaseModel):
    effective_default_mode: Mode = Field(
        description="the mode a session gets when no other rule applies (forced mode wins)"
    )
    default_mode: Mode
    force_mode: Mode | None
    allow_mode_override: bool
    rollout_percent: int
    allowlist_size: int


class BreakerView(BaseModel):
    state: BreakerState
    failures_in_window: int
    threshold: int
    window_seconds: float
    cooldown_seconds: float
    probe_window_seconds: float
    seconds_until_half_open: float | None
    probe_session_id: str | None
    opened_count: int


class SessionCount(BaseModel):
    mode: Mode
    reason: Reason
    count: int


class SessionCounts(BaseModel):
    total: int
    by_mode: dict[str, int]
    by_reason: dict[str, int]
    by_mode_and_reason: list[SessionCount]


class AdminRouting(BaseModel):
    started_at: datetime
    routing: RoutingRules
    breaker: BreakerView
    sessions: SessionCounts = Field(description="sessions issued since this gateway started")
    fallbacks_reported: int


def admin_view(
    *,
    policy: RoutingPolicy,
    breaker: BreakerSnapshot,
    issued: Counter[tuple[Mode, Reason]],
    fallbacks_reported: int,
    started_at: datetime,
) -> AdminRouting:
    by_mode: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for (mode, reason), count in issued.items():
        by_mode[mode] += count
        by_reason[reason] += count
    return AdminRouting(
        started_at=started_at,
        routing=RoutingRules(
            effective_default_mode=policy.force_mode or policy.default_mode,
            default_mode=policy.default_mode,
            force_mode=policy.force_mode,
            allow_mode_override=policy.allow_override,
            rollout_percent=policy.rollout_percent,
            allowlist_size=len(policy.allowlist),
        ),
        breaker=BreakerView(
            state=breaker.state,
            failures_in_window=breaker.failures_in_window,
            threshold=breaker.threshold,
            window_seconds=breaker.window_s,
            cooldown_seconds=breaker.cooldown_s,
            probe_window_seconds=breaker.probe_window_s,
            seconds_until_half_open=breaker.seconds_until_half_open,
            probe_session_id=breaker.probe_session_id,
            opened_count=breaker.opened_count,
        ),
        sessions=SessionCounts(
            total=sum(issued.values()),
            by_mode=dict(sorted(by_mode.items())),
            by_reason=dict(sorted(by_reason.items())),
            by_mode_and_reason=[
                SessionCount(mode=mode, reason=reason, count=count)
                for (mode, reason), count in sorted(issued.items())
            ],
        ),
        fallbacks_reported=fallbacks_reported,
    )
