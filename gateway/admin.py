"""The admin view (`GET /v1/admin/routing`): what routing does now and what it has done.

The breaker and the counts come from the store: with Redis they are every replica's (counts
since `counts_since`); in memory, this process's since it started. While Redis is unreachable a
replica shows its own (`store.state` says "degraded").
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from pipelines.contracts import Mode, Reason
from pipelines.contracts.routing import RoutingPolicy

from .breaker import BreakerState
from .router import RoutingOverview
from .store import StoreHealth, StoreKind, StoreState


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


class StoreView(BaseModel):
    kind: StoreKind
    state: StoreState
    detail: str | None


class AdminRouting(BaseModel):
    started_at: datetime = Field(description="when this replica started")
    routing: RoutingRules
    breaker: BreakerView
    sessions: SessionCounts = Field(
        description="sessions issued since counts_since (every replica's with Redis)"
    )
    counts_since: datetime | None
    fallbacks_reported: int
    store: StoreView


def admin_view(
    *,
    policy: RoutingPolicy,
    overview: RoutingOverview,
    store: StoreHealth,
    started_at: datetime,
) -> AdminRouting:
    breaker = overview.breaker
    issued = Counter(overview.counts.issued)
    since = overview.counts.since
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
        counts_since=datetime.fromtimestamp(since, UTC) if since is not None else None,
        fallbacks_reported=overview.counts.fallbacks_reported,
        store=StoreView(kind=store.kind, state=store.state, detail=store.detail),
    )
