"""The store of several gateway replicas: the same state as `MemoryStore`, in Redis
(`REDIS_URL`), so every replica sees one truth.

Each method is one round trip: a Lua script (atomic on the server: a ticket is used once, one
probe is admitted, however many replicas ask at once) or one pipeline; script calls made at
the same moment share a round trip (`_Pipeliner`). Keys are
`voicegw:<REDIS_KEY_PREFIX>:<kind>:<id>` and every key has a TTL:

    ticket:<jti>         "1" until the ticket's own expiry          used relay tickets
    relay:<session id>   zset slot -> lease end (ms), TTL the lease  concurrent relay sessions
    fallback:<session>   "1" for 4 h                                 sticky fallback
    livekit:<session>    "1" for 4 h                                 issued livekit, not reported
    rate:<caller>        counter, TTL its window                     rate limit (fixed window)
    breaker              the breaker's JSON record, a day past its last change
    counts               hash "<mode>:<reason>", fallbacks_reported, since; 30 days past the last

When Redis fails (refused, reset, or slower than `timeout_s`) the store says so once in the log
and, until a call succeeds again, answers from this process's memory (`MemoryStore`, which it
keeps warm: the sticky fallbacks and livekit issues this replica wrote, and the last breaker
record it read), except that a relay ticket is refused ("unavailable": better a fresh session
than a ticket usable twice). While it is down it tries Redis again at most every `retry_s`, so
a dead Redis costs requests nothing and a slow one costs at most one timeout per `retry_s`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_args

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from pipelines.contracts import MODES, Mode, Reason
from pipelines.contracts.metrics import STORE_UP
from relay.tickets import Admission

from .store import (
    FallbackFacts,
    MemoryStore,
    Overview,
    Quota,
    SessionFacts,
    StoreHealth,
    StoreKind,
)

log = logging.getLogger("voicegw.store")

T = TypeVar("T")

COUNTS_TTL_S = 30 * 24 * 3600
_REASONS: tuple[str, ...] = get_args(Reason)

# Counting a call against a fixed window; KEYS[1] the window, ARGV[1] limit, ARGV[2] window ms.
# Over the limit it returns {0, ms left}; under it the script goes on.
_RATE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return {0, redis.call('PTTL', KEYS[1])} end
"""

_SESSION_FACTS = (
    _RATE
    + """
return {1, redis.call('EXISTS', KEYS[2]), redis.call('GET', KEYS[3])}
"""
)

# KEYS counts, livekit; ARGV field, now, counts ttl s, livekit ttl ms ('' for openai).
_SESSION_ISSUED = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSETNX', KEYS[1], 'since', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[4]) end
return 1
"""

# KEYS rate, fallback, livekit, counts, breaker; ARGV limit, window ms, sticky ms, now, counts ttl.
_FALLBACK = (
    _RATE
    + """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
local first = redis.call('DEL', KEYS[3])
if first == 1 then
  redis.call('HINCRBY', KEYS[4], 'fallbacks_reported', 1)
  redis.call('HSETNX', KEYS[4], 'since', ARGV[4])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
return {1, first, redis.call('GET', KEYS[5])}
"""
)

# KEYS breaker; ARGV old ('' for none), new, ttl ms.
_SWAP = """
local current = redis.call('GET', KEYS[1])
if (current or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return {1}
end
return {0, current}
"""

# KEYS ticket, slots; ARGV ticket expiry ms, limit, lease ms, slot, now ms.
_ADMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'used' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 'full' end
redis.call('SET', KEYS[1], '1', 'PXAT', ARGV[1])
redis.call('ZADD', KEYS[2], tonumber(ARGV[5]) + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 'admitted'
"""


class _Failed:
    """A call Redis did not answer (the outage is logged already)."""


FAILED = _Failed()


class _Pipeliner:
    """Auto-pipelining: the script calls made in one turn of the event loop go to Redis as one
    pipeline, one round trip for all of them. Under load many requests are in flight at once,
    and one pipelined call costs about a fifth of a call on its own (`bench/capacity.py`
    session-rate), so the shared store costs each request little more than the memory one."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, result))
        if len(self._queue) == 1:
            loop.call_soon(self._send)
        return result

    async def aclose(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def _send(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self, batch: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            results = await self._execute(batch)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # a restarted Redis forgot the scripts: load them, send those again
                for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                    script.sha = await self._redis.script_load(script.script)
                again = await self._execute([batch[i] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except asyncio.CancelledError:  # the store is closing
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every caller hears it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller gave up (timeout)
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(
        self, batch: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]]
    ) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results


class RedisStore:
    """`Store` on Redis (redis-py's asyncio client), with this process's memory to fall back on."""

    kind: StoreKind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`url` is REDIS_URL (never logged: it may carry a password); `prefix` namespaces the
        keys under `voicegw:`; `timeout_s` bounds every call; `clock` gives epoch seconds."""
        self._redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # the bound is ours: one attempt, then memory
        )
        self._ns = "voicegw:" + (f"{prefix}:" if prefix else "")
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self.local = MemoryStore(clock=clock)
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._pipe = _Pipeliner(self._redis)
        self._scripts = {
            name: self._redis.register_script(source)
            for name, source in (
                ("facts", _SESSION_FACTS),
                ("issued", _SESSION_ISSUED),
                ("fallback", _FALLBACK),
                ("swap", _SWAP),
                ("admit", _ADMIT),
            )
        }
        STORE_UP.set(1)

    def key(self, kind: str, ident: str = "") -> str:
        return f"{self._ns}{kind}:{ident}" if ident else f"{self._ns}{kind}"

    # -- the relay's ledger -----------------------------------------------------------------

    async def admit_relay(
        self, *, jti: str, expires_at: float, session_id: str, limit: int, lease_s: float
    ) -> tuple[Admission, str | None]:
        slot = secrets.token_hex(8)
        now_ms = int(self._clock() * 1000)
        result = await self._call(
            "admit_relay",
            lambda: self._pipe.call(
                self._scripts["admit"],
                keys=[self.key("ticket", jti), self.key("relay", session_id)],
                args=[int(expires_at * 1000), limit, int(lease_s * 1000), slot, now_ms],
            ),
        )
        if isinstance(result, _Failed):
            return "unavailable", None
        if result == "admitted":
            return "admitted", slot
        return ("used" if result == "used" else "full"), None

    async def release_relay(self, *, session_id: str, slot: str) -> None:
        await self._call(
            "release_relay", lambda: self._redis.zrem(self.key("relay", session_id), slot)
        )

    # -- routing ----------------------------------------------------------------------------

    async def session_facts(self, session_id: str, quota: Quota) -> SessionFacts:
        result = await self._call(
            "session_facts",
            lambda: self._pipe.call(
                self._scripts["facts"],
                keys=[
                    self.key("rate", quota.key),
                    self.key("fallback", session_id),
                    self.key("breaker"),
                ],
                args=[quota.limit, _ms(quota.window_s)],
            ),
        )
        if isinstance(result, _Failed):
            return await self.local.session_facts(session_id, quota)
        if result[0] == 0:
            return SessionFacts(_seconds_left(result[1], quota.window_s))
        breaker = result[2]
        self.local.mirror_breaker(breaker)
        return SessionFacts(None, bool(result[1]), breaker)

    async def session_issued(
        self, session_id: str, mode: Mode, reason: Reason, *, livekit_ttl_s: float
    ) -> None:
        livekit = mode == "livekit"
        result = await self._call(
            "session_issued",
            lambda: self._pipe.call(
                self._scripts["issued"],
                keys=[self.key("counts"), self.key("livekit", session_id)],
                args=[
                    f"{mode}:{reason}",
                    self._clock(),
                    COUNTS_TTL_S,
                    _ms(livekit_ttl_s) if livekit else "",
                ],
            ),
        )
        if isinstance(result, _Failed):
            await self.local.session_issued(session_id, mode, reason, livekit_ttl_s=livekit_ttl_s)
        elif livekit:
            self.local.remember_livekit(session_id, livekit_ttl_s)

    async def fallback_reported(
        self, session_id: str, quota: Quota, *, sticky_ttl_s: float
    ) -> FallbackFacts:
        result = await self._call(
            "fallback_reported",
            lambda: self._pipe.call(
                self._scripts["fallback"],
                keys=[
                    self.key("rate", quota.key),
                    self.key("fallback", session_id),
                    self.key("livekit", session_id),
                    self.key("counts"),
                    self.key("breaker"),
                ],
                args=[
                    quota.limit,
                    _ms(quota.window_s),
                    _ms(sticky_ttl_s),
                    self._clock(),
                    COUNTS_TTL_S,
                ],
            ),
        )
        if isinstance(result, _Failed):
            return await self.local.fallback_reported(session_id, quota, sticky_ttl_s=sticky_ttl_s)
        if result[0] == 0:
            return FallbackFacts(_seconds_left(result[1], quota.window_s))
        self.local.remember_fallback(session_id, sticky_ttl_s)
        breaker = result[2]
        self.local.mirror_breaker(breaker)
        return FallbackFacts(None, bool(result[1]), breaker)

    async def load_breaker(self) -> str | None:
        result = await self._call("load_breaker", lambda: self._redis.get(self.key("breaker")))
        if isinstance(result, _Failed):
            return await self.local.load_breaker()
        record = None if result is None else str(result)
        self.local.mirror_breaker(record)
        return record

    async def swap_breaker(
        self, old: str | None, new: str, *, ttl_s: float
    ) -> tuple[bool, str | None]:
        result = await self._call(
            "swap_breaker",
            lambda: self._pipe.call(
                self._scripts["swap"], keys=[self.key("breaker")], args=[old or "", new, _ms(ttl_s)]
            ),
        )
        if isinstance(result, _Failed):
            return await self.local.swap_breaker(old, new, ttl_s=ttl_s)
        current: str | None = new if result[0] == 1 else result[1]
        self.local.mirror_breaker(current)
        return result[0] == 1, current

    async def overview(self) -> Overview:
        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.key("counts"))
                pipe.get(self.key("breaker"))
                return await pipe.execute()

        result = await self._call("overview", read)
        if isinstance(result, _Failed):
            return await self.local.overview()
        counts, breaker = result
        issued: dict[tuple[Mode, Reason], int] = {}
        for name, value in counts.items():
            mode, _, reason = name.partition(":")
            if mode in MODES and reason in _REASONS:
                issued[(mode, reason)] = int(value)
        since = counts.get("since")
        return Overview(
            issued,
            int(counts.get("fallbacks_reported", 0)),
            float(since) if since is not None else None,
            breaker,
        )

    async def check(self) -> StoreHealth:
        self._retry_at = 0.0  # a health check always asks Redis itself
        result = await self._call("ping", self._redis.ping)
        if isinstance(result, _Failed):
            return StoreHealth(
                self.kind, "degraded", "Redis is unreachable: serving from this replica's memory"
            )
        return StoreHealth(self.kind, "ok")

    async def aclose(self) -> None:
        await self._pipe.aclose()
        await self._redis.aclose()

    # -- failure handling -------------------------------------------------------------------

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T | _Failed:
        if self._down_since is not None:
            if time.monotonic() < self._retry_at:
                return FAILED
            self._retry_at = time.monotonic() + self._retry_s  # one call at a time tries
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(what, exc)
            return FAILED
        if self._down_since is not None:
            log.warning(
                "shared store recovered",
                extra={
                    "store": "redis",
                    "outage_seconds": round(time.monotonic() - self._down_since, 1),
                },
            )
            self._down_since = None
            STORE_UP.set(1)
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._retry_at = now + self._retry_s
        if self._down_since is not None:
            return
        self._down_since = now
        STORE_UP.set(0)
        # The exception's type only: redis-py's messages can name the host, and the URL may
        # carry a password.
        log.warning(
            "shared store unavailable",
            extra={
                "store": "redis",
                "call": what,
                "error": type(exc).__name__,
                "fallback": "this replica's memory; relay tickets refused until it returns",
            },
        )


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _seconds_left(ms: Any, window_s: float) -> float:
    left = int(ms) if ms is not None else -1
    return left / 1000 if left >= 0 else window_s
