"""The relay feeds the shared Prometheus metrics: sessions active, turn stages, upstream
errors (what the gateway's /metrics serves)."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from simulators.openai_realtime import RealtimeSimulator, Say

from .conftest import Relay, collect_until, speak


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_turn_is_counted_in_the_stage_histograms(
    relay: Relay, realtime: RealtimeSimulator
) -> None:
    v2v = {"mode": "openai", "stage": "voice_to_voice"}
    before = sample("voicegw_turn_stage_latency_seconds_count", **v2v)
    active_before = sample("voicegw_relay_sessions_active")
    realtime.script(Say("(simulated) Hello.", audio_ms=100))
    async with relay.connect("metrics-1") as connection:
        await collect_until(connection, lambda f: f["type"] == "session.created")
        assert sample("voicegw_relay_sessions_active") == active_before + 1
        await speak(connection)
        frames = await collect_until(connection, lambda f: f["type"] == "metrics.turn")
    metrics = frames[-1]
    assert sample("voicegw_turn_stage_latency_seconds_count", **v2v) == before + 1
    assert sample("voicegw_turn_stage_latency_seconds_sum", **v2v) > 0
    assert metrics["tts_ttfb_ms"] is None  # a stage the mode cannot see is not observed
    await realtime.wait_for(lambda: realtime.open_connections == 0)
    await relay_session_closed(active_before)


async def relay_session_closed(active_before: float) -> None:
    """The gauge falls back once the relay has shut the session down (a Prometheus gauge has
    no change event to wait on, so poll it, bounded by a timeout)."""
    async with asyncio.timeout(5):
        while sample("voicegw_relay_sessions_active") != active_before:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_an_upstream_drop_counts_an_upstream_error(
    relay: Relay, realtime: RealtimeSimulator
) -> None:
    errors = sample("voicegw_upstream_errors_total", mode="openai")
    realtime.drop_after_audio_deltas = 1
    realtime.script(Say("(simulated) Hello.", audio_ms=200))
    async with relay.connect("metrics-2") as connection:
        await speak(connection)
        frames = await collect_until(
            connection, lambda f: f["type"] == "voice.error" and f["fatal"]
        )
    assert frames[-1]["code"] == "upstream_closed"
    assert sample("voicegw_upstream_errors_total", mode="openai") == errors + 1
