"""One routing decision: every rule that picks a mode, in order, and the state they read.

`Router.route` is the only place a session's mode is decided. The rules, first match wins, are
the pure `resolve_mode` (`pipelines/contracts/routing.py`): kill switch, sticky fallback,
breaker, URL flag, allowlist, rollout, default. The router reads the facts they need from the
store in one call (the session's sticky fallback, the breaker's record, and the caller's rate
limit), and owns the one step that changes state: when the breaker is half-open, the first
session the rules send to livekit claims the probe, by a compare-and-swap of the breaker's
record, so exactly one is admitted across every replica sharing the store.

Fallback reports feed the breaker through here too, under three conditions (so no page can hold
it open): the session was issued livekit and has not reported since (a report uses the issue
up: a repeat changes nothing), the report carries a launch token (an anonymous dev report is
counted but never reaches the breaker), and the breaker's own rules (`gateway/breaker.py`).
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.contracts import Mode, Reason, Settings
from pipelines.contracts.metrics import (
    BREAKER_TRANSITIONS,
    FALLBACK_REPORTS_IGNORED,
    FALLBACKS_REPORTED,
    REQUESTS_LIMITED,
    SESSIONS_ISSUED,
    set_breaker_state,
)
from pipelines.contracts.routing import RoutingPolicy, resolve_mode

from .breaker import BreakerRecord, BreakerRules, BreakerSnapshot, BreakerState
from .errors import RateLimited
from .store import Overview, Quota, Store

log = logging.getLogger("voicegw.router")

# A session whose page fell back stays on openai for a meeting's length; a livekit issue can be
# reported failed for as long.
FALLBACK_STICKY_S = 4 * 3600.0
# Compare-and-swap attempts on the breaker's record before giving up on one update (only a
# burst of replicas changing it at the same instant contends).
_SWAP_ATTEMPTS = 8


@dataclass(frozen=True)
class RoutingOverview:
    """What the admin view shows: the counts (across replicas with Redis) and the breaker."""

    counts: Overview
    breaker: BreakerSnapshot


class Router:
    """Owns mode resolution and the state behind it (`Store`)."""

    def __init__(
        self,
        policy: RoutingPolicy,
        rules: BreakerRules,
        store: Store,
        *,
        rate_limit: int = 30,
        rate_window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` gives epoch seconds (replicas share the breaker's times); tests pass a fake
        one."""
        self.policy = policy
        self.rules = rules
        self.store = store
        self._rate_limit = rate_limit
        self._rate_window_s = rate_window_s
        self._clock = clock
        self._replica = secrets.token_hex(4)
        self._probe_failures = itertools.count(1)
        self._shown: BreakerState | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, *, clock: Callable[[], float] = time.time
    ) -> Router:
        return cls(
            RoutingPolicy.from_settings(settings),
            BreakerRules(
                threshold=settings.breaker_failure_threshold,
                window_s=settings.breaker_window_seconds,
                cooldown_s=settings.breaker_cooldown_seconds,
                probe_window_s=settings.breaker_probe_window_seconds,
            ),
            store,
            rate_limit=settings.session_rate_limit,
            rate_window_s=settings.session_rate_window_seconds,
            clock=clock,
        )

    def selectable_modes(self) -> frozenset[Mode]:
        return self.policy.selectable_modes()

    # -- sessions ---------------------------------------------------------------------------

    async def route(
        self, *, session_id: str, user: str | None, requested: Mode | None, caller: str
    ) -> tuple[Mode, Reason]:
        """The mode of a session the page asks for, and the rule that decided it. `caller`
        keys the rate limit (the launch token's session, or the client's address). Raises
        RateLimited."""
        facts = await self.store.session_facts(session_id, self._quota(caller))
        if facts.retry_after_s is not None:
            raise self._limited("session", facts.retry_after_s)
        now = self._clock()
        raw, record = await self._current(facts.breaker, now)

        def decide(breaker_open: bool) -> tuple[Mode, Reason]:
            return resolve_mode(
                self.policy,
                session_id=session_id,
                user=user,
                requested=requested,
                fell_back=facts.fell_back,
                breaker_open=breaker_open,
            )

        mode, reason = decide(self.rules.blocks(record, session_id))
        if mode == "livekit" and reason != "forced" and record.state == "half_open":
            if not await self._admit_probe(raw, record, session_id, now):
                mode, reason = decide(True)
        return mode, reason

    async def preview(
        self, *, session_id: str, user: str | None, requested: Mode | None
    ) -> tuple[Mode, Reason]:
        """What routing would answer now, claiming nothing (the launcher's preview)."""
        now = self._clock()
        _, record = await self._current(await self.store.load_breaker(), now)
        return resolve_mode(
            self.policy,
            session_id=session_id,
            user=user,
            requested=requested,
            breaker_open=self.rules.blocks(record),
        )

    async def issued(self, session_id: str, mode: Mode, reason: Reason) -> None:
        """Count a session handed out; a livekit one may later report its failure once."""
        await self.store.session_issued(session_id, mode, reason, livekit_ttl_s=FALLBACK_STICKY_S)
        SESSIONS_ISSUED.labels(mode=mode, reason=reason).inc()

    async def fallback(self, session_id: str, *, caller: str, anonymous: bool) -> None:
        """The page's livekit session failed: the session sticks to openai, and the report
        counts against the breaker if it may (see the module's docstring). Raises
        RateLimited."""
        facts = await self.store.fallback_reported(
            session_id, self._quota(caller), sticky_ttl_s=FALLBACK_STICKY_S
        )
        if facts.retry_after_s is not None:
            raise self._limited("fallback", facts.retry_after_s)
        if not facts.first_report:
            FALLBACK_REPORTS_IGNORED.inc()
            log.info(
                "fallback report ignored",
                extra={"session_id": session_id, "why": "no unreported livekit session"},
            )
            return
        FALLBACKS_REPORTED.inc()
        if anonymous:
            log.info(
                "fallback report not counted by the breaker",
                extra={"session_id": session_id, "why": "no launch token"},
            )
            return
        await self._fail(facts.breaker, session_id, active_probe=False)

    async def probe_failed(self) -> None:
        """The active probe of the LiveKit API failed (gateway/dispatch.py)."""
        key = f"probe:{self._replica}:{next(self._probe_failures)}"
        await self._fail(await self.store.load_breaker(), key, active_probe=True)

    # -- what ops see -----------------------------------------------------------------------

    async def breaker(self) -> BreakerSnapshot:
        now = self._clock()
        _, record = await self._current(await self.store.load_breaker(), now)
        return self.rules.snapshot(record, now)

    async def overview(self) -> RoutingOverview:
        counts = await self.store.overview()
        now = self._clock()
        _, record = await self._current(counts.breaker, now)
        return RoutingOverview(counts, self.rules.snapshot(record, now))

    # -- the breaker's record ---------------------------------------------------------------

    async def _current(self, raw: str | None, now: float) -> tuple[str | None, BreakerRecord]:
        """The record advanced to `now`; a state change time made is written back first, so
        exactly one replica logs it."""
        stored = BreakerRecord.loads(raw)
        record = self.rules.advance(stored, now)
        for _ in range(_SWAP_ATTEMPTS):
            if record.state == stored.state:
                break
            new = record.dumps()
            swapped, current = await self.store.swap_breaker(raw, new, ttl_s=self.rules.ttl_s)
            if swapped:
                self._entered(record, previous=stored.state, session_id=stored.probe)
                raw = new
                break
            raw, stored = current, BreakerRecord.loads(current)
            record = self.rules.advance(stored, now)
        self._show(record.state)
        return raw, record

    async def _admit_probe(
        self, raw: str | None, record: BreakerRecord, session_id: str, now: float
    ) -> bool:
        for _ in range(_SWAP_ATTEMPTS):
            admitted = self.rules.admit(record, session_id, now)
            if admitted is None:
                return False
            if admitted == record:
                return True  # the probe already (a reload of it)
            swapped, current = await self.store.swap_breaker(
                raw, admitted.dumps(), ttl_s=self.rules.ttl_s
            )
            if swapped:
                log.info("breaker probe admitted", extra={"session_id": session_id})
                return True
            raw, record = await self._current(current, now)
        return False

    async def _fail(self, raw: str | None, key: str, *, active_probe: bool) -> None:
        now = self._clock()
        for _ in range(_SWAP_ATTEMPTS):
            raw, record = await self._current(raw, now)
            failed = self.rules.fail(record, key, now, active_probe=active_probe)
            if failed == record:
                return
            swapped, current = await self.store.swap_breaker(
                raw, failed.dumps(), ttl_s=self.rules.ttl_s
            )
            if swapped:
                if failed.state != record.state:
                    where = {"failure": key} if active_probe else {"session_id": key}
                    self._entered(failed, previous=record.state, **where)
                return
            raw = current
        log.warning("breaker update lost to contention", extra={"failure": key})

    def _entered(self, record: BreakerRecord, *, previous: BreakerState, **fields: object) -> None:
        BREAKER_TRANSITIONS.labels(state=record.state).inc()
        self._show(record.state)
        extra = {k: v for k, v in fields.items() if v is not None}
        log.warning(
            "breaker state changed",
            extra={**extra, "breaker_state": record.state, "previous_state": previous},
        )

    def _show(self, state: BreakerState) -> None:
        if state != self._shown:
            set_breaker_state(state)
            self._shown = state

    # -- rate limit -------------------------------------------------------------------------

    def _quota(self, caller: str) -> Quota:
        return Quota(caller, self._rate_limit, self._rate_window_s)

    def _limited(self, route: str, retry_after_s: float) -> RateLimited:
        REQUESTS_LIMITED.labels(route=route).inc()
        seconds = max(1, math.ceil(retry_after_s))
        return RateLimited(
            "rate_limited",
            f"too many session requests for this launch token: try again in {seconds} s",
            retry_after_s=seconds,
        )
