"""What the session history costs the audio path: the relay's CPU per frame pair and the
LiveKit pipeline's voice-to-voice, with history on and off, in the same run.

    .venv/bin/python -m bench.history_overhead [--sessions 50] [--seconds 8] [--rounds 3]
                                               [--side-rate 2] [--utterances 6]
                                               [--pin] [--skip-relay|--skip-pipeline]

Relay: two gateway processes served as `voicegw serve` serves them, one recording into a
SQLite history (a fresh file in a temporary directory), one with HISTORY_ENABLED=false, both
relaying to one echo OpenAI Realtime simulator (`bench.relay_overhead`'s). In each round the
same load runs against each, in alternating order: `--sessions` sessions stream 20 ms chunks
at real-time rate (each chunk's echo timed: a frame pair), while a side load issues
`--side-rate` sessions a second (each one recorded, so the history's writer works during the
window; 2/s is ~10x what 50 sessions of 5 minutes start). Recording is per event, never per
frame: the streamed chunks themselves record nothing, which is what this checks. CPU per
frame pair is the process's user+system time over the window / frame pairs carried.

Pipeline: the LiveKit pipeline with the real Silero, Deepgram, Groq and Chatterbox plugins on
simulators at the published latency profile, `--utterances` espeak-ng utterances per run, its
session recorded into a SQLite history (turns, transcripts, tool calls, metrics) or not;
runs alternate on and off. v2v is measured from the truth of the audio (the lab's figure).

Reports per path: median and p95 over all frame pairs / turns, the median over rounds of CPU
per frame pair, and the on/off ratio. The issue's target: no more than 3 % apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.relay_overhead import API_KEY, Target, child, free_port, load


def _serve_relay(port: int, upstream: str, data_dir: str) -> None:
    """The gateway as `voicegw serve` runs it; `data_dir` "off": no history."""
    from pipelines.contracts import load_settings
    from voicegw.logs import configure_logging
    from voicegw.serve import run_server, serve_gateway

    env = {
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_REALTIME_URL": upstream,
        "OPENAI_TURN_DETECTION": "none",
        "VOICE_DEFAULT_MODE": "openai",
        "SESSION_RATE_LIMIT": "100000",
    }
    if data_dir == "off":
        env["HISTORY_ENABLED"] = "false"
    else:
        env["VOICEGW_DATA_DIR"] = data_dir
    configure_logging("WARNING")
    run_server(serve_gateway(load_settings(env), "127.0.0.1", port))


def _child(
    *args: str, port: int, core: str | None = None
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """The relay bench's echo simulator, or one of this bench's gateways."""
    module = "bench.relay_overhead" if args[0] == "_simulator" else "bench.history_overhead"
    return child(*args, port=port, module=module, core=core)


async def _side_load(http_url: str, rate: float, stop: asyncio.Event) -> int:
    """Issue `rate` sessions a second (each one recorded) until `stop`."""
    issued = 0
    async with httpx.AsyncClient(base_url=http_url) as http:
        while not stop.is_set():
            response = await http.get("/v1/session", params={"mode": "openai"})
            response.raise_for_status()
            issued += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
    return issued


async def relay_overhead(
    sessions: int, seconds: float, rounds: int, side_rate: float, pin: bool
) -> dict[str, Any]:
    """`pin`: both gateways on core 0, the simulator and the load on core 1."""
    sim_port, on_port, off_port = free_port(), free_port(), free_port()
    relay_core, other_core = ("0", "1") if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {1})
    upstream = f"ws://127.0.0.1:{sim_port}/v1/realtime"
    results: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="voicegw-history-bench-") as data_dir:
        async with (
            _child("_simulator", str(sim_port), port=sim_port, core=other_core),
            _child("_relay", str(on_port), upstream, data_dir, port=on_port, core=relay_core) as on,
            _child("_relay", str(off_port), upstream, "off", port=off_port, core=relay_core) as off,
        ):
            paths = {
                "on": (on_port, on.pid),
                "off": (off_port, off.pid),
            }
            for round_ in range(rounds):
                order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
                for name in order:
                    port, pid = paths[name]
                    url = f"http://127.0.0.1:{port}"
                    target = Target(f"history-{name}", f"ws://127.0.0.1:{port}/v1/realtime", url)
                    stop = asyncio.Event()
                    side = asyncio.create_task(_side_load(url, side_rate, stop))
                    try:
                        result = await load(target, sessions, seconds, pid)
                    finally:
                        stop.set()
                        result_side = await side
                    result["side_sessions"] = result_side
                    results[name].append(result)
                    print(
                        f"relay round {round_ + 1} history {name}: "
                        f"{result['cpu_us_per_pair']:.1f} µs CPU per pair, frame pair "
                        f"p50 {result['p50']:.2f} ms p95 {result['p95']:.2f} ms, "
                        f"{result['pairs']} pairs, {result['lost']} lost, "
                        f"{result_side} sessions issued beside, load {_loadavg()}",
                        file=sys.stderr,
                        flush=True,
                    )
            recorded = _count_sessions(Path(data_dir) / "history.db")
    return {"results": results, "recorded": recorded}


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _count_sessions(path: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT count(*) FROM sessions").fetchone()
    return int(count)


async def pipeline_overhead(utterances: int, rounds: int) -> dict[str, list[float]]:
    import aiohttp

    from bench.pipeline_latency import build_conversation
    from history import History, HistoryConfig
    from history.database import sqlite_url
    from pipelines.contracts import load_settings
    from pipelines.contracts.history import NO_SESSION_HISTORY, SessionHistory
    from pipelines.livekit.pipeline import PipelineOptions, load_vad
    from pipelines.livekit.state import RecordingPublisher
    from simulators.deepgram import DeepgramSimulator
    from voicegw.lab.talk_livekit import talk
    from voicegw.simulate import simulated_stack

    conversation, transcripts = build_conversation(utterances)
    v2v: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="voicegw-history-bench-") as data_dir:
        history = History(
            HistoryConfig(url=sqlite_url(Path(data_dir) / "history.db")), retention=False
        )
        history.start()
        vad = None
        try:
            for round_ in range(rounds):
                order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
                for name in order:
                    deepgram = DeepgramSimulator(transcripts=list(transcripts))
                    async with (
                        simulated_stack(
                            load_settings({}), "published", speak_replies=False,
                            deepgram=deepgram,
                        ) as stack,
                        aiohttp.ClientSession() as http,
                    ):  # fmt: skip
                        options = PipelineOptions.from_settings(stack.settings)
                        vad = vad or load_vad(options.vad)
                        session_id = f"bench-{name}-{round_}"
                        recording: SessionHistory = NO_SESSION_HISTORY
                        if name == "on":
                            recording = history.recorder.open(
                                session_id=session_id, mode="livekit", user="bench@example.com"
                            )
                        result = await talk(
                            options,
                            conversation.samples,
                            conversation.sample_rate,
                            vad=vad,
                            http_session=http,
                            publisher=RecordingPublisher(),
                            session_id=session_id,
                            utterances=conversation.utterances,
                            history=recording,
                        )
                    figures = [
                        t.voice_to_voice_ms
                        for t in result.result.turns
                        if t.voice_to_voice_ms is not None
                    ]
                    v2v[name] += figures
                    print(
                        f"pipeline round {round_ + 1} history {name}: {len(figures)} turns, "
                        f"v2v median {statistics.median(figures):.0f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
            await history.recorder.flush()
            detail = await history.queries.session("bench-on-0")
            turns = sum(len(leg.turns) for leg in detail.legs) if detail else 0
            print(f"pipeline: the history kept {turns} turns of bench-on-0", file=sys.stderr)
        finally:
            await history.aclose()
    return v2v


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _ratio(on: float, off: float) -> str:
    return f"{on / off:.3f} ({(on / off - 1) * 100:+.1f} %)"


def report(relay: dict[str, Any] | None, pipeline: dict[str, list[float]] | None) -> str:
    lines = ["| figure | history off | history on | on / off |", "|---|---|---|---|"]
    if relay is not None:
        runs = relay["results"]
        cpu = {k: statistics.median(r["cpu_us_per_pair"] for r in v) for k, v in runs.items()}
        lines.append(
            f"| relay CPU per frame pair, median of rounds (µs) | {cpu['off']:.1f} | "
            f"{cpu['on']:.1f} | {_ratio(cpu['on'], cpu['off'])} |"
        )
        for q in (50, 95):
            p = {k: statistics.median(r[f"p{q}"] for r in v) for k, v in runs.items()}
            lines.append(
                f"| relay frame pair p{q}, median of rounds (ms) | {p['off']:.2f} | "
                f"{p['on']:.2f} | {_ratio(p['on'], p['off'])} |"
            )
    if pipeline is not None:
        for q in (50, 95):
            off, on = _pct(pipeline["off"], q), _pct(pipeline["on"], q)
            lines.append(
                f"| pipeline v2v p{q} over all turns (ms) | {off:.0f} | {on:.0f} | "
                f"{_ratio(on, off)} |"
            )
    notes = []
    if relay is not None:
        pairs = {k: sum(r["pairs"] for r in v) for k, v in relay["results"].items()}
        notes.append(
            f"relay: {pairs['off']} / {pairs['on']} frame pairs (off / on); the on gateway's "
            f"history holds {relay['recorded']} sessions"
        )
    if pipeline is not None:
        notes.append(f"pipeline: {len(pipeline['off'])} / {len(pipeline['on'])} turns (off / on)")
    return "\n".join(lines + [""] + notes)


async def main(args: argparse.Namespace) -> None:
    relay = None
    if not args.skip_relay:
        relay = await relay_overhead(
            args.sessions, args.seconds, args.rounds, args.side_rate, args.pin
        )
    pipeline = None
    if not args.skip_pipeline:
        pipeline = await pipeline_overhead(args.utterances, args.rounds)
    print(report(relay, pipeline))


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_relay":
        _serve_relay(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=50, help="streaming relay sessions")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--side-rate", type=float, default=2.0, help="sessions issued per s")
    parser.add_argument("--utterances", type=int, default=6, help="per pipeline run")
    parser.add_argument(
        "--pin", action="store_true", help="gateways on core 0, simulator and load on core 1"
    )
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    started = time.perf_counter()
    asyncio.run(main(args))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    cli()
