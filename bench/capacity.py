"""Capacity per process: how much one process of each kind holds on one core.

    .venv/bin/python -m bench.capacity session-rate [--seconds 10] [--repeat 3]
    .venv/bin/python -m bench.capacity relay [--sessions 1,100,200,300] [--seconds 8] [--repeat 3]
    .venv/bin/python -m bench.capacity livekit [--sessions 1,2,4,8,12] [--repeat 3]

The process measured runs pinned to core 0 (`taskset -c 0`); everything else (the load, the
simulators, redis-server) runs on core 1, so the figure is one core's. Each run records the
machine's load average (`/proc/loadavg`) beside it, and each figure is the median of the
rounds.

- `session-rate`: `GET /v1/session` requests per second one gateway process answers (32
  keep-alive connections, half livekit and half openai sessions, each a new anonymous session
  id), with the in-memory store and with Redis, rounds interleaved; the ratio Redis / memory,
  of the rates and of the requests per second of the gateway's own CPU.
- `relay`: openai-mode relay sessions per gateway process. Each session streams 20 ms pcm16
  chunks at real time through the relay to the echo simulator and times each chunk's echo
  (`bench/relay_overhead.py`'s load); capacity is the largest count whose echo p95 stays within
  50 ms of the one-session figure with no frame lost.
- `livekit`: livekit-mode conversations one agent worker process holds: N conversations at
  once in one process (the lab's file-audio path, `voicegw/lab/talk_livekit.py`: real Silero,
  the real plugins, the simulated providers at the `published` profile in another process),
  each five espeak-ng utterances three seconds apart, started spread over three seconds;
  capacity is the largest N whose voice-to-voice p95 stays within 50 ms of N = 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.relay_overhead import Target, cpu_seconds, free_port, load

MEASURED_CORE = "0"
OTHER_CORE = "1"
SECRET = "capacity-bench-gateway-secret-" * 2
OPENAI_KEY = "sk-simulated-openai-key"
TEXTS = (
    "What is on the agenda for today's meeting?",
    "Can you look up our travel policy for trips abroad?",
    "Who is presenting the quarterly numbers?",
    "Please remind everyone to send their slides by Friday.",
    "Thanks, that is all for now.",
)
LIMIT_MS = 50.0


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pinned(core: str, *argv: str) -> list[str]:
    return ["taskset", "-c", core, *argv]


@contextlib.asynccontextmanager
async def process(
    argv: list[str], *, port: int | None = None, capture: bool = False
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process until the block ends; waits for `port` to accept connections.
    `capture` pipes its stdout to the caller."""
    out = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=out, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        if port is not None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                    break
                except OSError:
                    if proc.returncode is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{argv} did not start") from None
                    await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


# -- session-rate ------------------------------------------------------------------------------


def _serve_gateway(port: int, redis_url: str) -> None:
    """The gateway as `voicegw serve` runs it, logging at INFO as production does."""
    from pipelines.contracts import load_settings
    from voicegw.logs import configure_logging
    from voicegw.serve import run_server, serve_gateway

    env = {
        "GATEWAY_SECRET": SECRET,
        "OPENAI_API_KEY": OPENAI_KEY,
        "SESSION_RATE_LIMIT": "100000",
    }
    if redis_url:
        env |= {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"bench{port}"}
    configure_logging("INFO")
    run_server(serve_gateway(load_settings(env), "127.0.0.1", port))


async def _hammer(port: int, seconds: float, connections: int) -> tuple[int, int]:
    """Keep-alive HTTP/1.1 GETs of /v1/session as fast as the gateway answers: (ok, errors)."""
    done = asyncio.get_running_loop().time() + seconds
    ok = errors = 0

    async def one(worker: int) -> None:
        nonlocal ok, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        try:
            while asyncio.get_running_loop().time() < done:
                n += 1
                mode = "livekit" if n % 2 else "openai"
                writer.write(
                    f"GET /v1/session?mode={mode}&session_id=b{worker}x{n}{time.monotonic_ns()} "
                    "HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(connections)))
    return ok, errors


async def session_rate(seconds: float, repeat: int, connections: int) -> None:
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_argv = [
        "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no",
    ]  # fmt: skip
    # Requests per second, and per second of the gateway's own CPU: on a shared machine the
    # load generator and redis-server compete for the other core, and a Redis answer that
    # waits for CPU there leaves the gateway idle; per CPU-second is what one gateway process
    # holds when it is the busy one.
    rates: dict[str, list[float]] = {"memory": [], "redis": []}
    per_cpu: dict[str, list[float]] = {"memory": [], "redis": []}
    async with process(pinned(OTHER_CORE, *redis_argv), port=redis_port):
        for round_ in range(repeat):
            for store in ("memory", "redis"):
                port = free_port()
                argv = pinned(
                    MEASURED_CORE, sys.executable, "-m", "bench.capacity", "_gateway", str(port),
                    redis_url if store == "redis" else "",
                )  # fmt: skip
                async with process(argv, port=port) as gateway:
                    await _hammer(port, 2.0, connections)  # warm up
                    load_before = loadavg()
                    cpu_before = cpu_seconds(gateway.pid)
                    ok, errors = await _hammer(port, seconds, connections)
                    cpu = cpu_seconds(gateway.pid) - cpu_before
                rates[store].append(ok / seconds)
                per_cpu[store].append(ok / cpu if cpu else float("nan"))
                print(
                    f"round {round_ + 1} {store}: {ok / seconds:.0f} req/s, "
                    f"{per_cpu[store][-1]:.0f} per CPU-second (gateway {cpu / seconds:.0%} busy, "
                    f"{errors} errors), load {load_before}",
                    flush=True,
                )
    print()
    print("store    req/s (median)  per CPU-s (median)  rounds (req/s; per CPU-s)")
    for store in ("memory", "redis"):
        print(
            f"{store:7s}  {_median(rates[store]):13.0f}  {_median(per_cpu[store]):18.0f}  "
            f"{', '.join(f'{r:.0f}' for r in rates[store])}; "
            f"{', '.join(f'{r:.0f}' for r in per_cpu[store])}"
        )
    print(
        f"redis / memory = {_median(rates['redis']) / _median(rates['memory']):.2f} (req/s), "
        f"{_median(per_cpu['redis']) / _median(per_cpu['memory']):.2f} (per CPU-second)"
    )


# -- relay -------------------------------------------------------------------------------------


async def relay(counts: list[int], seconds: float, repeat: int) -> None:
    sim_port, relay_port = free_port(), free_port()
    upstream = f"ws://127.0.0.1:{sim_port}/v1/realtime"
    target = Target(
        "relay", f"ws://127.0.0.1:{relay_port}/v1/realtime", f"http://127.0.0.1:{relay_port}"
    )
    bench = [sys.executable, "-m", "bench.relay_overhead"]
    rows: list[tuple[int, list[dict[str, Any]]]] = []
    async with (
        process(pinned(OTHER_CORE, *bench, "_simulator", str(sim_port)), port=sim_port),
        process(
            pinned(MEASURED_CORE, *bench, "_relay", str(relay_port), upstream), port=relay_port
        ) as gateway,
    ):
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        for round_ in range(repeat):
            for n in counts:
                load_before = loadavg()
                result = await load(target, n, seconds, gateway.pid)
                result["load"] = load_before
                runs[n].append(result)
                print(
                    f"round {round_ + 1}, {n} sessions: p50 {result['p50']:.2f} "
                    f"p95 {result['p95']:.2f} p99 {result['p99']:.2f} ms, lost {result['lost']}, "
                    f"{result['cpu_us_per_pair']:.0f} µs CPU per pair, load {load_before}",
                    flush=True,
                )
        rows = [(n, runs[n]) for n in counts]
    base = _median([r["p95"] for r in rows[0][1]])
    print()
    print("sessions  echo p95 ms (median)  vs 1 session  lost  CPU µs/pair  core busy")
    for n, results in rows:
        p95 = _median([r["p95"] for r in results])
        cpu = _median([r["cpu_us_per_pair"] for r in results])
        busy = cpu * n * 50 / 1e6  # 50 frame pairs per second per session
        lost = sum(r["lost"] for r in results)
        print(f"{n:8d}  {p95:20.2f}  {p95 - base:+12.2f}  {lost:4d}  {cpu:11.0f}  {busy:8.0%}")


# -- livekit -----------------------------------------------------------------------------------


def _serve_providers(profile: str) -> None:
    """Every simulated provider in this process; prints their environment as one JSON line."""

    async def main() -> None:
        from simulators.profiles import simulated_providers

        async with simulated_providers(profile) as sims:
            print(json.dumps(sims.env), flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())


def _livekit_load(sessions: int, env_json: str) -> None:
    """`sessions` conversations at once in this process; prints each turn's voice-to-voice."""
    import logging

    import aiohttp

    from pipelines.contracts import load_settings
    from pipelines.livekit.pipeline import PipelineOptions, load_vad
    from pipelines.livekit.state import RecordingPublisher
    from voicegw.lab.audio import conversation
    from voicegw.lab.talk_livekit import talk

    logging.basicConfig(level=logging.ERROR)

    async def main() -> list[float | None]:
        settings = load_settings(json.loads(env_json))
        options = PipelineOptions.from_settings(settings)
        vad = load_vad(options.vad)
        spoken = conversation(list(TEXTS), lead_s=0.5, gap_s=3.0, tail_s=3.0)

        async with aiohttp.ClientSession() as http:

            async def one(i: int) -> list[float | None]:
                await asyncio.sleep(3.0 * i / sessions)  # meetings do not speak in step
                run = await talk(
                    options,
                    spoken.samples,
                    spoken.sample_rate,
                    vad=vad,
                    http_session=http,
                    publisher=RecordingPublisher(),
                    session_id=f"capacity-{i}",
                    utterances=spoken.utterances,
                )
                turns = [t.voice_to_voice_ms for t in run.result.turns]
                return turns + [None] * (len(TEXTS) - len(turns))  # a missed turn counts

            per_session = await asyncio.gather(*(one(i) for i in range(sessions)))
        return [v for turns in per_session for v in turns]

    print(json.dumps(asyncio.run(main())), flush=True)


async def livekit(counts: list[int], repeat: int, profile: str) -> None:
    me = [sys.executable, "-m", "bench.capacity"]
    async with process(pinned(OTHER_CORE, *me, "_providers", profile), capture=True) as providers:
        assert providers.stdout is not None
        env = json.loads(await providers.stdout.readline())
        runs: dict[int, list[list[float | None]]] = {n: [] for n in counts}
        loads: dict[int, list[str]] = {n: [] for n in counts}
        for round_ in range(repeat):
            for n in counts:
                load_before = loadavg()
                argv = pinned(MEASURED_CORE, *me, "_livekit_load", str(n), json.dumps(env))
                async with process(argv, capture=True) as worker:
                    assert worker.stdout is not None
                    out = await worker.stdout.read()
                v2v: list[float | None] = json.loads(out.decode().strip().splitlines()[-1])
                runs[n].append(v2v)
                loads[n].append(load_before)
                heard = [v for v in v2v if v is not None]
                print(
                    f"round {round_ + 1}, {n} conversations: v2v p50 {_pct(heard, 50):.0f} "
                    f"p95 {_pct(heard, 95):.0f} ms over {len(heard)}/{len(v2v)} turns, "
                    f"load {load_before}",
                    flush=True,
                )
    print()
    # Few conversations give few turns per round (five at N = 1), so beside the median of the
    # rounds' p95 the table shows the p95 of every round's turns pooled.
    print(
        "conversations  v2v p50 ms  p95 ms (median of rounds)  pooled p95  vs 1 (pooled)"
        "  missed turns  load"
    )
    base: float | None = None
    for n in counts:
        p50 = _median([_pct([v for v in r if v is not None], 50) for r in runs[n]])
        p95 = _median([_pct([v for v in r if v is not None], 95) for r in runs[n]])
        pooled = _pct([v for r in runs[n] for v in r if v is not None], 95)
        missed = sum(v is None for r in runs[n] for v in r)
        base = pooled if base is None else base
        verdict = "" if pooled - base <= LIMIT_MS and not missed else "  over"
        print(
            f"{n:13d}  {p50:10.0f}  {p95:25.0f}  {pooled:10.0f}  {pooled - base:+13.0f}  "
            f"{missed:12d}  {' | '.join(loads[n])}{verdict}"
        )


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_gateway":
        _serve_gateway(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_providers":
        _serve_providers(sys.argv[2])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_livekit_load":
        _livekit_load(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="what", required=True)
    rate = sub.add_parser("session-rate", help="/v1/session req/s, memory vs Redis")
    rate.add_argument("--seconds", type=float, default=10.0)
    rate.add_argument("--repeat", type=int, default=3)
    rate.add_argument("--connections", type=int, default=32)
    relayed = sub.add_parser("relay", help="openai relay sessions per gateway process")
    relayed.add_argument("--sessions", default="1,100,200,300")
    relayed.add_argument("--seconds", type=float, default=8.0)
    relayed.add_argument("--repeat", type=int, default=3)
    worker = sub.add_parser("livekit", help="livekit conversations per worker process")
    worker.add_argument("--sessions", default="1,2,4,8,12")
    worker.add_argument("--repeat", type=int, default=3)
    worker.add_argument("--profile", default="published")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(OTHER_CORE)})  # the load generator stays off the measured core
    if args.what == "session-rate":
        asyncio.run(session_rate(args.seconds, args.repeat, args.connections))
    elif args.what == "relay":
        import uvloop

        uvloop.run(relay([int(n) for n in args.sessions.split(",")], args.seconds, args.repeat))
    else:
        counts = [int(n) for n in args.sessions.split(",")]
        asyncio.run(livekit(counts, args.repeat, args.profile))


if __name__ == "__main__":
    cli()
