"""The automatic rollback breaker for livekit mode (DESIGN.md routing rule 2).

Semantics (the clock is injected, so tests move time explicitly):

- closed: LiveKit failures are remembered per session id for `window_s`. When `threshold`
  distinct failures (sessions that reported a fallback, or failed active probes) fall inside
  the window, the breaker opens. One page reporting the same session twice counts once.
- open: new sessions resolve to openai (`reason: "breaker_open"`). Every further failure
  restarts the cooldown, so the breaker stays open while LiveKit keeps failing. When
  `cooldown_s` has passed since the last failure, it is half-open.
- half_open: the next session that routing sends to livekit becomes the probe; all other
  sessions still resolve to openai. If a failure arrives while the probe runs (the probe
  session, or any other, reports a fallback; or an active probe fails) the breaker opens again.
  If `probe_window_s` passes after the probe session was issued without a failure, the breaker
  closes and forgets old failures. A half-open breaker with no probe yet waits for one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipelines.contracts.metrics import BREAKER_TRANSITIONS, set_breaker_state

log = logging.getLogger("voicegw.breaker")

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerSnapshot:
    """What the admin view, /readyz and /metrics show."""

    state: BreakerState
    failures_in_window: int
    threshold: int
    window_s: float
    cooldown_s: float
    probe_window_s: float
    seconds_until_half_open: float | None
    probe_session_id: str | None
    opened_count: int

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "failures_in_window": self.failures_in_window,
            "threshold": self.threshold,
            "window_seconds": self.window_s,
            "cooldown_seconds": self.cooldown_s,
            "probe_window_seconds": self.probe_window_s,
            "seconds_until_half_open": self.seconds_until_half_open,
            "probe_session_id": self.probe_session_id,
            "opened_count": self.opened_count,
        }


class Breaker:
    """One per gateway process; not shared between replicas (each replica sees its own
    pages' failures, which is enough to stop sending new sessions into a broken LiveKit)."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        window_s: float = 60.0,
        cooldown_s: float = 60.0,
        probe_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` returns seconds on a monotonic scale; tests pass a fake one."""
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._threshold = threshold
        self._window_s = window_s
        self._cooldown_s = cooldown_s
        self._probe_window_s = probe_window_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures: dict[str, float] = {}  # failure key -> when it was last seen
        self._last_failure_at = 0.0
        self._probe_session_id: str | None = None
        self._probe_started_at = 0.0
        self._opened_count = 0
        set_breaker_state("closed")

    # -- queries ---------------------------------------------------------------------------

    def state(self) -> BreakerState:
        """The state now (time-driven transitions happen when the breaker is asked)."""
        self._advance()
        return self._state

    def blocks(self, session_id: str | None = None) -> bool:
        """Whether a new livekit session must go to openai instead, without claiming the
        probe (for launch previews and readiness). A half-open breaker blocks everyone but
        the probe session."""
        self._advance()
        if self._state == "closed":
            return False
        if self._state == "open":
            return True
        return self._probe_session_id is not None and self._probe_session_id != session_id

    def admit_probe(self, session_id: str) -> bool:
        """Called when routing would send `session_id` to livekit: True lets it through. In
        the half-open state the first such session becomes the probe (asking again with the
        same id, e.g. a page reload, stays the probe)."""
        self._advance()
        if self._state == "closed":
            return True
        if self._state == "open":
            return False
        if self._probe_session_id is None:
            self._probe_session_id = session_id
            self._probe_started_at = self._clock()
            log.info("breaker probe admitted", extra={"session_id": session_id})
            return True
        return self._probe_session_id == session_id

    def snapshot(self) -> BreakerSnapshot:
        self._advance()
        now = self._clock()
        until: float | None = None
        if self._state == "open":
            until = round(max(0.0, self._last_failure_at + self._cooldown_s - now), 3)
        return BreakerSnapshot(
            state=self._state,
            failures_in_window=len(self._failures),
            threshold=self._threshold,
            window_s=self._window_s,
            cooldown_s=self._cooldown_s,
            probe_window_s=self._probe_window_s,
            seconds_until_half_open=until,
            probe_session_id=self._probe_session_id,
            opened_count=self._opened_count,
        )

    # -- events ----------------------------------------------------------------------------

    def record_failure(self, key: str, *, source: str = "fallback") -> None:
        """A LiveKit failure: `key` is the session id that fell back (or a probe's own key)."""
        self._advance()
        now = self._clock()
        self._last_failure_at = now
        if self._state == "half_open":
            self._open(now, key, source)
            return
        self._failures[key] = now
        if self._state == "closed" and len(self._failures) >= self._threshold:
            self._open(now, key, source)

    # -- internals -------------------------------------------------------------------------

    def _advance(self) -> None:
        now = self._clock()
        cutoff = now - self._window_s
        for key in [k for k, at in self._failures.items() if at < cutoff]:
            del self._failures[key]
        if self._state == "open" and now - self._last_failure_at >= self._cooldown_s:
            self._enter("half_open")
            self._probe_session_id = None
        elif (
            self._state == "half_open"
            and self._probe_session_id is not None
            and now - self._probe_started_at >= self._probe_window_s
        ):
            probe = self._probe_session_id
            self._failures.clear()
            self._probe_session_id = None
            self._enter("closed", session_id=probe)

    def _open(self, now: float, key: str, source: str) -> None:
        self._opened_count += 1
        self._probe_session_id = None
        self._last_failure_at = now
        # A page's failure is named by its session; an active probe's key is not a session.
        if source == "fallback":
            self._enter("open", session_id=key, source=source)
        else:
            self._enter("open", failure=key, source=source)

    def _enter(self, state: BreakerState, **fields: object) -> None:
        self._state = state
        set_breaker_state(state)
        BREAKER_TRANSITIONS.labels(state=state).inc()
        extra = {k: v for k, v in fields.items() if v is not None}
        extra["breaker_state"] = state
        log.warning("breaker state changed", extra=extra)
