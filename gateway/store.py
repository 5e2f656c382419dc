"""The state the gateway keeps between requests, behind one small interface, and the store that
keeps it in this process's memory (the default: one replica, nothing to install).

`Store` has one method per event that touches state, so each is one round trip to Redis
(`gateway/redis_store.py`, the store of several replicas): a session request reads its facts
(its rate-limit window, whether its page fell back, the breaker) in one call and records what
was issued in another; a fallback report is one call; the breaker is one record swapped whole;
the relay admits a ticket and takes a slot in one call. The rules that interpret the state live
above it (`gateway/router.py`, `gateway/breaker.py`), so both stores share them, and one test
suite runs against both (`tests/gateway/test_store.py`).

What is kept, and for how long:
- used relay tickets, until each ticket expires (single use);
- relay slots per session id (concurrent relay sessions), each for a bounded lease;
- sticky fallbacks (a session whose page fell back stays on openai), for a meeting's length;
- livekit issues (a session issued livekit, not yet reported failed), for as long;
- rate-limit windows, for their window;
- the breaker's record, and the counts of sessions issued by mode and reason.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from pipelines.contracts import Mode, Reason
from relay.tickets import Admission, RelayLedger

StoreKind = Literal["memory", "redis"]
StoreState = Literal["ok", "degraded"]

V = TypeVar("V")


@dataclass(frozen=True)
class Quota:
    """A rate limit: at most `limit` calls per fixed window of `window_s` for `key`."""

    key: str
    limit: int
    window_s: float


@dataclass(frozen=True)
class SessionFacts:
    """What a session request needs to know. Over its quota (`retry_after_s` set) nothing else
    was read."""

    retry_after_s: float | None
    fell_back: bool = False
    breaker: str | None = None


@dataclass(frozen=True)
class FallbackFacts:
    """What a fallback report changed. `first_report`: the session had been issued livekit and
    had not reported since (so this report counts); the issue is used up by it."""

    retry_after_s: float | None
    first_report: bool = False
    breaker: str | None = None


@dataclass(frozen=True)
class Overview:
    """The counts for the admin view and the breaker's record (across replicas with Redis)."""

    issued: dict[tuple[Mode, Reason], int]
    fallbacks_reported: int
    since: float | None  # epoch seconds the counts run from
    breaker: str | None


@dataclass(frozen=True)
class StoreHealth:
    kind: StoreKind
    state: StoreState
    detail: str | None = None


class Store(RelayLedger, Protocol):
    """The gateway's state. No method raises for the store's own failures: what a store that
    cannot reach its backend does instead is its documented choice (`redis_store.py`)."""

    async def session_facts(self, session_id: str, quota: Quota) -> SessionFacts:
        """Count one request against `quota`; unless over it, the session's sticky fallback and
        the breaker's record."""
        ...

    async def session_issued(
        self, session_id: str, mode: Mode, reason: Reason, *, livekit_ttl_s: float
    ) -> None:
        """Count the session issued; a livekit one is remembered for `livekit_ttl_s`, so its
        page's first failure report can count."""
        ...

    async def fallback_reported(
        self, session_id: str, quota: Quota, *, sticky_ttl_s: float
    ) -> FallbackFacts:
        """Count one request against `quota`; unless over it, make the session stick to openai
        for `sticky_ttl_s`, use up its livekit issue, and give the breaker's record."""
        ...

    async def load_breaker(self) -> str | None:
        """The breaker's record (None: never written, or expired: a closed breaker)."""
        ...

    async def swap_breaker(
        self, old: str | None, new: str, *, ttl_s: float
    ) -> tuple[bool, str | None]:
        """Write `new` if the record is still `old`: (True, new), else (False, the record)."""
        ...

    async def overview(self) -> Overview: ...

    async def check(self) -> StoreHealth:
        """Whether the store works now (Redis is pinged)."""
        ...

    async def aclose(self) -> None: ...


class Expiring(Generic[V]):
    """Entries with a deadline. Expired ones leave through a heap as time passes, O(log n) each,
    never by a scan of the live ones; beyond `max_size` the entry nearest its deadline goes
    first, so no flood grows memory without bound."""

    def __init__(self, *, max_size: int, clock: Callable[[], float]) -> None:
        self._entries: dict[str, tuple[float, V]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._max_size = max_size
        self._clock = clock

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def get(self, key: str) -> V | None:
        self._expire()
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: str, value: V, until: float) -> None:
        self._expire()
        self._entries[key] = (until, value)
        heapq.heappush(self._heap, (until, next(self._seq), key))
        while len(self._entries) > self._max_size:
            self._pop_earliest()
        if len(self._heap) > 2 * len(self._entries) + 64:
            # Re-put and popped keys leave stale heap entries; rebuilding once the heap is
            # twice the live size keeps it O(n) in memory at amortised O(1) per put.
            self._heap = [(u, next(self._seq), k) for k, (u, _) in self._entries.items()]
            heapq.heapify(self._heap)

    def pop(self, key: str) -> V | None:
        self._expire()
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def _expire(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            self._pop_earliest()

    def _pop_earliest(self) -> None:
        while self._heap:
            until, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry[0] == until:
                del self._entries[key]
                return


@dataclass
class _Window:
    count: int
    until: float


class MemoryStore:
    """The state in this process's memory. Every map is bounded (`max_entries`), except used
    tickets: dropping one would let it be used twice, so a full ticket map refuses new relay
    sessions instead (it holds what is issued in a ticket's 60 s lifetime)."""

    kind: StoreKind = "memory"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = 100_000,
        max_tickets: int = 1_000_000,
    ) -> None:
        """`clock` gives epoch seconds (tickets carry epoch expiries); tests pass a fake one."""
        self._clock = clock
        self._max_tickets = max_tickets
        self._tickets: Expiring[bool] = Expiring(max_size=max_tickets + 1, clock=clock)
        self._slots: Expiring[dict[str, float]] = Expiring(max_size=max_entries, clock=clock)
        self._fell_back: Expiring[bool] = Expiring(max_size=max_entries, clock=clock)
        self._livekit: Expiring[bool] = Expiring(max_size=max_entries, clock=clock)
        self._windows: Expiring[_Window] = Expiring(max_size=max_entries, clock=clock)
        self._breaker: str | None = None
        self._issued: Counter[tuple[Mode, Reason]] = Counter()
        self._fallbacks = 0
        self._since = clock()

    # -- the relay's ledger -----------------------------------------------------------------

    async def admit_relay(
        self, *, jti: str, expires_at: float, session_id: str, limit: int, lease_s: float
    ) -> tuple[Admission, str | None]:
        if self._tickets.get(jti) is not None:
            return "used", None
        if len(self._tickets) >= self._max_tickets:
            return "unavailable", None
        now = self._clock()
        slots = self._slots.get(session_id) or {}
        slots = {slot: until for slot, until in slots.items() if until > now}
        if len(slots) >= limit:
            return "full", None
        self._tickets.put(jti, True, expires_at)
        slot = secrets.token_hex(8)
        slots[slot] = now + lease_s
        self._slots.put(session_id, slots, max(slots.values()))
        return "admitted", slot

    async def release_relay(self, *, session_id: str, slot: str) -> None:
        slots = self._slots.get(session_id)
        if slots is not None:
            slots.pop(slot, None)
            if not slots:
                self._slots.pop(session_id)

    # -- routing ----------------------------------------------------------------------------

    async def session_facts(self, session_id: str, quota: Quota) -> SessionFacts:
        retry_after = self._hit(quota)
        if retry_after is not None:
            return SessionFacts(retry_after)
        return SessionFacts(None, self._fell_back.get(session_id) is not None, self._breaker)

    async def session_issued(
        self, session_id: str, mode: Mode, reason: Reason, *, livekit_ttl_s: float
    ) -> None:
        self._issued[(mode, reason)] += 1
        if mode == "livekit":
            self.remember_livekit(session_id, livekit_ttl_s)

    async def fallback_reported(
        self, session_id: str, quota: Quota, *, sticky_ttl_s: float
    ) -> FallbackFacts:
        retry_after = self._hit(quota)
        if retry_after is not None:
            return FallbackFacts(retry_after)
        first = self.remember_fallback(session_id, sticky_ttl_s)
        if first:
            self._fallbacks += 1
        return FallbackFacts(None, first, self._breaker)

    async def load_breaker(self) -> str | None:
        return self._breaker

    async def swap_breaker(
        self, old: str | None, new: str, *, ttl_s: float
    ) -> tuple[bool, str | None]:
        if self._breaker != old:
            return False, self._breaker
        self._breaker = new
        return True, new

    async def overview(self) -> Overview:
        return Overview(dict(self._issued), self._fallbacks, self._since, self._breaker)

    async def check(self) -> StoreHealth:
        return StoreHealth(self.kind, "ok")

    async def aclose(self) -> None:
        return None

    # -- what the Redis store mirrors here, to fall back on --------------------------------

    def remember_livekit(self, session_id: str, ttl_s: float) -> None:
        self._livekit.put(session_id, True, self._clock() + ttl_s)

    def remember_fallback(self, session_id: str, ttl_s: float) -> bool:
        """Stick the session to openai; whether it had an unreported livekit issue."""
        self._fell_back.put(session_id, True, self._clock() + ttl_s)
        return self._livekit.pop(session_id) is not None

    def mirror_breaker(self, record: str | None) -> None:
        if record is not None:
            self._breaker = record

    def _hit(self, quota: Quota) -> float | None:
        """Count a call; the seconds until its window ends when it is over the limit."""
        now = self._clock()
        window = self._windows.get(quota.key)
        if window is None:
            self._windows.put(quota.key, _Window(1, now + quota.window_s), now + quota.window_s)
            return None if quota.limit >= 1 else quota.window_s
        window.count += 1
        return None if window.count <= quota.limit else max(0.0, window.until - now)
