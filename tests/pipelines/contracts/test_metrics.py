"""The shared Prometheus metrics: turn latencies are recorded per stage, in seconds."""

from __future__ import annotations

from pipelines.contracts.metrics import observe_turn
from tests.stack import metric


def test_turn_latencies_are_recorded_per_stage_in_seconds() -> None:
    count = metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="stt")
    total = metric("voicegw_turn_stage_latency_seconds_sum", mode="livekit", stage="stt")
    v2v = metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="voice_to_voice")
    observe_turn("livekit", {"stt_ms": 150.0, "voice_to_voice_ms": None, "bogus_ms": 3.0})
    assert metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="stt") == (
        count + 1
    )
    stt_sum = metric("voicegw_turn_stage_latency_seconds_sum", mode="livekit", stage="stt")
    assert abs(stt_sum - total - 0.15) < 1e-9
    assert (
        metric("voicegw_turn_stage_latency_seconds_count", mode="livekit", stage="voice_to_voice")
        == v2v
    )
