"""Prometheus metrics of every process, on prometheus-client's default registry.

One module so the gateway, the relay and the LiveKit worker share names and labels without
importing each other. Who feeds what:

- gateway: `SESSIONS_ISSUED`, `FALLBACKS_REPORTED`, `FALLBACK_REPORTS_IGNORED`,
  `BREAKER_STATE`, `BREAKER_TRANSITIONS`, `BOT_LAUNCHES`, `AGENT_DISPATCHES`, `LIVEKIT_PROBES`,
  `REQUESTS_LIMITED`, `STORE_UP`.
- relay (openai mode): `RELAY_SESSIONS_ACTIVE`, `UPSTREAM_ERRORS{mode="openai"}`.
- LiveKit worker: `TURN_STAGE_LATENCY{mode="livekit"}`, `UPSTREAM_ERRORS{mode="livekit"}`; it
  serves them itself with `start_metrics_server(METRICS_PORT)`.
- the n8n executor (both modes): `TOOL_CALLS`, `TOOL_LATENCY`.
- the session history's writer (gateway and worker): `HISTORY_UP`, `HISTORY_DROPPED`.

Latencies are in seconds, as Prometheus expects; `observe_turn()` converts the contract's
`*_ms` fields.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .session_config import Mode

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)

# -- gateway ------------------------------------------------------------------------------

SESSIONS_ISSUED = Counter(
    "voicegw_sessions_issued",
    "Sessions issued by the gateway, by mode and the routing rule that decided it.",
    ["mode", "reason"],
)
FALLBACKS_REPORTED = Counter(
    "voicegw_fallbacks_reported",
    "LiveKit failures reported by the page (POST /v1/session/fallback): the first report of a "
    "session issued livekit (a repeat is counted in voicegw_fallback_reports_ignored).",
)
FALLBACK_REPORTS_IGNORED = Counter(
    "voicegw_fallback_reports_ignored",
    "Fallback reports that changed nothing: the session had no unreported livekit session.",
)
REQUESTS_LIMITED = Counter(
    "voicegw_requests_limited",
    "Requests refused with 429 (SESSION_RATE_LIMIT per launch token), by route.",
    ["route"],
)
STORE_UP = Gauge(
    "voicegw_store_up",
    "Whether the shared store (Redis) answers: 0 while this replica serves from its memory.",
)
BREAKER_STATES = ("closed", "open", "half_open")
BREAKER_STATE = Gauge(
    "voicegw_breaker_state",
    "The livekit rollback breaker: 1 for the current state, 0 for the others.",
    ["state"],
)
BREAKER_TRANSITIONS = Counter(
    "voicegw_breaker_transitions",
    "Breaker state changes, by the state entered.",
    ["state"],
)
BOT_LAUNCHES = Counter(
    "voicegw_bot_launches",
    "Recall.ai bots the launcher tried to create, by outcome (ok, error).",
    ["status"],
)
AGENT_DISPATCHES = Counter(
    "voicegw_agent_dispatches",
    "Re-join dispatch checks: none_needed (room new or agent live), created, error.",
    ["outcome"],
)
LIVEKIT_PROBES = Counter(
    "voicegw_livekit_probes",
    "Active probes of the LiveKit server API (list rooms), by outcome (ok, error).",
    ["outcome"],
)

# -- relay and worker ---------------------------------------------------------------------

RELAY_SESSIONS_ACTIVE = Gauge(
    "voicegw_relay_sessions_active",
    "WebSocket relay sessions currently open (openai mode).",
)
UPSTREAM_ERRORS = Counter(
    "voicegw_upstream_errors",
    "Failures of an upstream provider connection or request, by mode.",
    ["mode"],
)
TURN_STAGES = ("eou", "stt", "llm_ttft", "tts_ttfb", "voice_to_voice")
TURN_STAGE_LATENCY = Histogram(
    "voicegw_turn_stage_latency_seconds",
    "Per-turn latency of each pipeline stage (the contract's metrics.turn fields).",
    ["mode", "stage"],
    buckets=_LATENCY_BUCKETS,
)

# -- tools --------------------------------------------------------------------------------

TOOL_CALLS = Counter(
    "voicegw_tool_calls",
    "Tool calls through the n8n executor, by tool name and status (ok, error).",
    ["name", "status"],
)
TOOL_LATENCY = Histogram(
    "voicegw_tool_latency_seconds",
    "Wall time of a tool call through the n8n executor, by tool name.",
    ["name"],
    buckets=_LATENCY_BUCKETS,
)

# -- session history ------------------------------------------------------------------------

HISTORY_UP = Gauge(
    "voicegw_history_up",
    "Whether the session history is being written: 0 while its database fails or its queue "
    "is full (records are then dropped, never waited for).",
)
HISTORY_DROPPED = Counter(
    "voicegw_history_dropped",
    "Session history records not written, by why: queue_full (the database was down or slow "
    "and the bounded queue filled) or rejected (the database refused the batch).",
    ["reason"],
)

for _state in BREAKER_STATES:
    BREAKER_STATE.labels(state=_state).set(1 if _state == "closed" else 0)
STORE_UP.set(1)
HISTORY_UP.set(1)


def to_ms(seconds: float) -> float:
    """A duration in the contract's unit: milliseconds, to a tenth."""
    return round(seconds * 1000, 1)


def observe_turn(mode: Mode, stages_ms: Mapping[str, float | None]) -> None:
    """Record one turn's stage latencies, given in milliseconds under the contract's names
    (`eou_ms`, `stt_ms`, ...; the `_ms` suffix is optional). Unknown names and None are
    skipped, so a turn without a tool or a filler records what it has."""
    for key, value in stages_ms.items():
        stage = key.removesuffix("_ms")
        if value is None or stage not in TURN_STAGES:
            continue
        TURN_STAGE_LATENCY.labels(mode=mode, stage=stage).observe(max(0.0, value) / 1000)


def set_breaker_state(state: str) -> None:
    """Mark `state` (one of BREAKER_STATES) as the breaker's current state."""
    for name in BREAKER_STATES:
        BREAKER_STATE.labels(state=name).set(1 if name == state else 0)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """Serve the default registry on `host:port` from a daemon thread (the LiveKit worker's
    own `/metrics`; the gateway serves it on its HTTP port instead)."""
    start_http_server(port, addr=host)
