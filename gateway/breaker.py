"""The automatic rollback breaker for livekit mode (DESIGN.md routing rule 2), as pure rules over
one record.

The record is the breaker's whole state. The router keeps it in the store (one copy for every
replica when the store is Redis), applies these rules to it with the time now, and writes the
result back with a compare-and-swap, so two replicas never both make one transition and exactly
one probe is admitted across them. Time is the wall clock (replicas share it; monotonic clocks
are per machine); the rules take it as an argument, so tests move time explicitly.

- closed: LiveKit failures are remembered per key (the session id that fell back, or an active
  probe's own key) for `window_s`; one key counts once. `threshold` distinct keys inside the
  window open the breaker.
- open: new sessions resolve to openai (`reason: "breaker_open"`). Further failures change
  nothing: the cooldown runs from the opening, so no page can hold the breaker open by
  reporting again. `cooldown_s` after it opened it is half-open.
- half_open: the next session routing sends to livekit becomes the probe (a reload of that same
  session stays the probe); all other sessions still resolve to openai. Only the probe's own
  failure re-opens it (or a failed active probe of the LiveKit API, which no page can send).
  If `probe_window_s` passes after the probe was admitted with no such failure, the breaker
  closes and forgets old failures. A half-open breaker with no probe yet waits for one.

Which reports count at all (sessions issued livekit, once each, never anonymous ones) is the
router's business; these rules only see failures that count.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

log = logging.getLogger("voicegw.breaker")

BreakerState = Literal["closed", "open", "half_open"]
_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")


@dataclass(frozen=True)
class BreakerRecord:
    """The breaker's state as stored. `failures` holds (key, when) pairs, at most `threshold`
    of them, so the record stays small whatever is reported."""

    state: BreakerState = "closed"
    failures: tuple[tuple[str, float], ...] = ()
    opened_at: float = 0.0
    probe: str | None = None
    probe_at: float = 0.0
    opened_count: int = 0

    def dumps(self) -> str:
        return json.dumps(
            {
                "state": self.state,
                "failures": [list(f) for f in self.failures],
                "opened_at": self.opened_at,
                "probe": self.probe,
                "probe_at": self.probe_at,
                "opened_count": self.opened_count,
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, raw: str | None) -> BreakerRecord:
        """The record stored as `raw`; none (or one this code cannot read) is a closed breaker."""
        if raw is None:
            return CLOSED
        try:
            data: Any = json.loads(raw)
            state = data["state"]
            if state not in _STATES:
                raise ValueError(state)
            return cls(
                state=state,
                failures=tuple((str(k), float(at)) for k, at in data["failures"]),
                opened_at=float(data["opened_at"]),
                probe=None if data["probe"] is None else str(data["probe"]),
                probe_at=float(data["probe_at"]),
                opened_count=int(data["opened_count"]),
            )
        except (ValueError, TypeError, KeyError):
            log.warning("breaker record unreadable: treated as closed")
            return CLOSED


CLOSED = BreakerRecord()


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


@dataclass(frozen=True)
class BreakerRules:
    """The breaker's settings and its transitions. Every method is pure: record and time in,
    record (and answer) out."""

    threshold: int = 3
    window_s: float = 60.0
    cooldown_s: float = 60.0
    probe_window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")

    @property
    def ttl_s(self) -> float:
        """How long a stored record must outlive its last change: long enough for every
        time-driven transition to be seen; afterwards a missing record is a closed breaker."""
        return max(self.window_s, self.cooldown_s + self.probe_window_s) + 24 * 3600

    def advance(self, record: BreakerRecord, now: float) -> BreakerRecord:
        """The record after the transitions time alone makes by `now`."""
        r = record
        if r.state == "open" and now >= r.opened_at + self.cooldown_s:
            r = replace(r, state="half_open", probe=None, probe_at=0.0)
        if (
            r.state == "half_open"
            and r.probe is not None
            and now >= r.probe_at + self.probe_window_s
        ):
            r = BreakerRecord(opened_count=r.opened_count)
        if r.state == "closed" and r.failures:
            cutoff = now - self.window_s
            kept = tuple(f for f in r.failures if f[1] >= cutoff)
            if kept != r.failures:
                r = replace(r, failures=kept)
        return r

    def fail(
        self, record: BreakerRecord, key: str, now: float, *, active_probe: bool = False
    ) -> BreakerRecord:
        """The record after a failure that counts. `record` is advanced to `now` already."""
        r = record
        if r.state == "closed":
            if any(k == key for k, _ in r.failures):
                return r
            failures = (*r.failures, (key, now))
            if len(failures) >= self.threshold:
                return self._opened(r, failures, now)
            return replace(r, failures=failures)
        if r.state == "half_open" and (active_probe or (r.probe is not None and key == r.probe)):
            return self._opened(r, ((key, now),), now)
        return r

    def admit(self, record: BreakerRecord, session_id: str, now: float) -> BreakerRecord | None:
        """For a session routing would send to livekit: the record with it admitted, or None
        when it must go to openai instead. In the half-open state the first such session
        becomes the probe; asking again with the same id (a page reload) stays the probe."""
        if record.state == "closed":
            return record
        if record.state == "open":
            return None
        if record.probe is None:
            return replace(record, probe=session_id, probe_at=now)
        return record if record.probe == session_id else None

    def blocks(self, record: BreakerRecord, session_id: str | None = None) -> bool:
        """Whether a new livekit session must go to openai, without claiming the probe. A
        half-open breaker blocks everyone but the probe session (and no one before a probe)."""
        if record.state == "closed":
            return False
        if record.state == "open":
            return True
        return record.probe is not None and record.probe != session_id

    def snapshot(self, record: BreakerRecord, now: float) -> BreakerSnapshot:
        until: float | None = None
        if record.state == "open":
            until = round(max(0.0, record.opened_at + self.cooldown_s - now), 3)
        return BreakerSnapshot(
            state=record.state,
            failures_in_window=len(record.failures),
            threshold=self.threshold,
            window_s=self.window_s,
            cooldown_s=self.cooldown_s,
            probe_window_s=self.probe_window_s,
            seconds_until_half_open=until,
            probe_session_id=record.probe,
            opened_count=record.opened_count,
        )

    @staticmethod
    def _opened(
        r: BreakerRecord, failures: tuple[tuple[str, float], ...], now: float
    ) -> BreakerRecord:
        return BreakerRecord(
            state="open", failures=failures, opened_at=now, opened_count=r.opened_count + 1
        )
