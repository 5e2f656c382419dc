"""Relay overhead: what the relay adds per event, its CPU and memory per session, and churn.

    .venv/bin/python -m bench.relay_overhead [--sessions 1,50,100,200] [--seconds 8]
                                             [--repeat 3] [--churn 1000]
                                             [--churn-warmup 5000]

Processes on 127.0.0.1: the OpenAI Realtime simulator in echo mode (every appended chunk comes
straight back as `response.output_audio.delta` whose `item_id` is the append's `event_id`),
the gateway exactly as `voicegw serve` runs it, two floors to compare with, and this load
generator. Each session streams 20 ms pcm16 chunks at real-time rate and times each frame
pair (append out -> its delta back). For each session count the same load runs, in
interleaved rounds, directly against the simulator and through each path; "added" is a path's
figure minus the direct run of the same round (two hops: client -> upstream and
upstream -> client), and the table shows medians over the rounds.

The paths: the relay (validation and state translation on); a bare pass-through on the
websockets library (the issue's "bare pass-through in Python"); and a lean pass-through made
of the relay's own two legs with nothing between them (what the relay's gate and state cost
is the difference between it and the relay).

CPU per frame pair is the path's process user+system time over the measured window divided
by the frame pairs it carried; RSS per session is the process's growth from before the
sessions opened to the end of the measured window, over the session count.
The churn run opens and closes sessions (half of them abruptly, mid-response) and reads the
relay process's live tasks, sockets and collector-tracked objects, and its RSS, before and
after. It first churns `--churn-warmup` sessions untimed: the process reaches its steady
state (used tickets are remembered for their 60 s lifetime, pydantic's string cache fills, the
allocator settles; on this machine RSS stops rising after about 9,000 sessions at this rate).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from relay.upstream import Upstream

CHUNK_S = 0.020
CHUNK = base64.b64encode(bytes(480 * 2)).decode()  # 20 ms of pcm16 silence at 24 kHz
API_KEY = "sk-simulated-openai-key"


# -- child processes -------------------------------------------------------------------------


def _serve_simulator(port: int) -> None:
    import uvicorn

    from relay.client_leg import direct_leg
    from simulators.openai_realtime import RealtimeSimulator, Say
    from voicegw.serve import SERVER_OPTIONS

    # Served like the gateway, with the relay's direct protocol as its frame hook, the echo
    # simulator answers appends from the socket's callback.
    sim = RealtimeSimulator(
        api_key=API_KEY,
        echo=True,
        validate_outgoing=False,
        default_reply=Say(audio_ms=3000, pace=True),
        take_over=direct_leg,
    )
    uvicorn.run(sim.app, host="127.0.0.1", port=port, log_level="error", lifespan="off",
                **SERVER_OPTIONS)  # fmt: skip


def _serve_relay(port: int, upstream: str) -> None:
    """The gateway exactly as `voicegw serve` runs it (uvloop, the relay's direct WebSocket
    protocol), plus one route reporting the process's stats (`process_stats`) for the churn run."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from pipelines.contracts import load_settings
    from voicegw.logs import configure_logging
    from voicegw.serve import run_server, serve_gateway

    async def stats(request: Request) -> Response:
        return JSONResponse(process_stats())

    settings = load_settings(
        {
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_REALTIME_URL": upstream,
            "OPENAI_TURN_DETECTION": "none",
            "VOICE_DEFAULT_MODE": "openai",
            "RELAY_MAX_SESSION_SECONDS": "3600",  # long enough for bench.soak too
        }
    )
    configure_logging("WARNING")  # as `voicegw --log-level WARNING serve`
    run_server(
        serve_gateway(settings, "127.0.0.1", port, extra_routes=[Route("/debug/stats", stats)])
    )


def _serve_passthrough(port: int, upstream: str) -> None:
    """The floor to compare with: a bare Python WebSocket pass-through (websockets on both
    sides, uvloop, no auth, no parsing, no validation, no state)."""
    from websockets.asyncio.server import ServerConnection, serve

    async def handle(client: ServerConnection) -> None:
        async with connect(
            f"{upstream}?model=gpt-realtime",
            additional_headers={"Authorization": f"Bearer {API_KEY}"},
            compression=None,
            max_size=None,
        ) as up:

            async def down() -> None:
                async for message in up:
                    await client.send(message)

            task = asyncio.create_task(down())
            try:
                async for message in client:
                    await up.send(message)
            finally:
                task.cancel()

    async def main() -> None:
        async with serve(handle, "127.0.0.1", port, compression=None, max_size=None):
            await asyncio.Future()

    import uvloop

    uvloop.run(main())


def _serve_lean(port: int, upstream: str) -> None:
    """The second floor: the relay's own two legs (relay.wire framing, the Upstream protocol)
    joined by callbacks, with nothing in between: no ASGI server, no auth, no parsing, no
    state. What the relay costs above this is what its gate, state and metrics cost."""
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    from relay.upstream import Upstream
    from relay.wire import TEXT, FrameReader, encode_frame

    class Client(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport
            self.handshake = ServerProtocol(max_size=None)
            self.reader = FrameReader(masked=True, max_size=1 << 24)
            self.up: Upstream | None = None

        def data_received(self, data: bytes) -> None:
            if self.up is None:  # the opening handshake (clients wait for the 101)
                self.handshake.receive_data(data)
                for event in self.handshake.events_received():
                    if isinstance(event, Request):
                        self.handshake.send_response(self.handshake.accept(event))
                        self.transport.pause_reading()
                        asyncio.get_running_loop().create_task(self.connect())
                return
            for opcode, payload in self.reader.feed(data):
                if opcode == TEXT:
                    self.up.send_text(payload)

        async def connect(self) -> None:
            self.up = await Upstream.connect(
                f"{upstream}?model=gpt-realtime", sink=self,
                headers={"Authorization": f"Bearer {API_KEY}"}, max_size=1 << 24,
                open_timeout_s=10,
            )  # fmt: skip
            for data in self.handshake.data_to_send():  # the 101 goes before any event
                self.transport.write(data)
            self.up.start()
            self.transport.resume_reading()

        def on_upstream_message(self, payload: bytes) -> None:
            self.transport.write(encode_frame(TEXT, payload, mask=False))

        def on_upstream_closed(self) -> None:
            self.transport.close()

        def on_upstream_backpressure(self, paused: bool) -> None:
            pass

        def on_upstream_unresponsive(self) -> None:
            pass

        def connection_lost(self, exc: Exception | None) -> None:
            if self.up is not None:
                self.up.abort()

    async def main() -> None:
        await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
        await asyncio.Future()

    import uvloop

    uvloop.run(main())


def process_stats() -> dict[str, Any]:
    """This process's live asyncio tasks, open sockets, objects the garbage collector tracks
    (after a collection; what `gc.freeze()` set aside at start-up is not counted) and RSS."""
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets += 1
    gc.collect()
    return {
        "tasks": len(asyncio.all_tasks()),
        "sockets": sockets,
        "objects": len(gc.get_objects()),
        "rss_kb": rss_kb(os.getpid()),
    }


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def child(
    *args: str, port: int, module: str = "bench.relay_overhead", core: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m module *args` until the block ends, once it listens on `port` (20 s at
    most); `core`: pinned there (`taskset`)."""
    command = [sys.executable, "-m", module, *args]
    if core is not None:
        command = ["taskset", "-c", core, *command]
    process = await asyncio.create_subprocess_exec(*command)
    try:
        for _ in range(400):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{module} {args[0]} did not start")
        yield process
    finally:
        process.terminate()
        await process.wait()


# -- load --------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    ws_url: str
    http_url: str | None  # the gateway, for tickets; None = straight to the simulator

    async def open(self, http: httpx.AsyncClient, session_id: str) -> ClientConnection:
        if self.http_url is None:
            return await connect(
                f"{self.ws_url}?model=gpt-realtime",
                additional_headers={"Authorization": f"Bearer {API_KEY}"},
                compression=None,
                max_size=None,
            )
        response = await http.get(
            f"{self.http_url}/v1/session", params={"mode": "openai", "session_id": session_id}
        )
        response.raise_for_status()
        ticket = response.json()["relay"]["ticket"]
        return await connect(
            self.ws_url,
            additional_headers={"Authorization": f"Bearer {ticket}"},
            compression=None,
            max_size=None,
        )


@dataclass
class Run:
    rtts_ms: list[float] = field(default_factory=list)
    pairs: int = 0
    lost: int = 0


_DELTA_PREFIX = b'{"type":"response.output_audio.delta"'


class StreamingClient:
    """One streaming session on the relay's own lean client (relay.upstream.Upstream: frames
    handled in `data_received`, no task per session), so the load generator spends little CPU
    per frame and its own jitter stays out of the numbers. Sends a 20 ms chunk every 20 ms
    (scheduled with call_at) and times each chunk's echo."""

    def __init__(self, ready_type: str, run: Run) -> None:
        self._ready_type = ready_type
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run = run
        self._sent: dict[str, float] = {}
        self._seq = 0
        self._measure_from = self._until = 0.0
        self._next = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.up: Upstream | None = None

    # -- UpstreamSink ----------------------------------------------------------------------

    def on_upstream_message(self, payload: bytes) -> None:
        if payload.startswith(_DELTA_PREFIX):
            start = payload.index(b'"item_id":"') + 11
            t0 = self._sent.pop(payload[start : payload.index(b'"', start)].decode(), None)
            if t0 is not None and t0 >= self._measure_from:
                self._run.rtts_ms.append((time.perf_counter() - t0) * 1000)
                self._run.pairs += 1
        elif not self.ready.done() and f'"type":"{self._ready_type}"'.encode() in payload[:40]:
            self.ready.set_result(None)

    def on_upstream_closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def on_upstream_backpressure(self, paused: bool) -> None:
        pass

    def on_upstream_unresponsive(self) -> None:
        pass

    # -- load ------------------------------------------------------------------------------

    def start(self, measure_from: float, until: float) -> None:
        self._measure_from, self._until = measure_from, until
        loop = asyncio.get_running_loop()
        self._next = loop.time() + random.random() * CHUNK_S
        self._timer = loop.call_at(self._next, self._tick)

    def stop(self) -> None:
        """Send no more chunks (the ones in flight are still timed)."""
        self._until = 0.0

    def _tick(self) -> None:
        if time.perf_counter() >= self._until:
            self._timer = None
            return
        self._seq += 1
        key = str(self._seq)
        self._sent[key] = time.perf_counter()
        assert self.up is not None
        self.up.send_text(
            ('{"type":"input_audio_buffer.append","event_id":"' + key + '","audio":"'
             + CHUNK + '"}').encode()
        )  # fmt: skip
        self._next += CHUNK_S
        self._timer = asyncio.get_running_loop().call_at(self._next, self._tick)

    async def finish(self) -> None:
        """Count unanswered chunks and close cleanly."""
        self._run.lost += len(self._sent)
        self._sent.clear()
        if self.up is not None:
            await self.up.aclose(1.0)


async def open_streaming(
    target: Target, http: httpx.AsyncClient, session_id: str, run: Run
) -> StreamingClient:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{target.ws_url}?model=gpt-realtime"
    if target.http_url is not None:
        response = await http.get(
            f"{target.http_url}/v1/session", params={"mode": "openai", "session_id": session_id}
        )
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['relay']['ticket']}"}
        url = target.ws_url
    client = StreamingClient("session.updated" if target.http_url else "session.created", run)
    client.up = await Upstream.connect(
        url, sink=client, headers=headers, max_size=1 << 24, open_timeout_s=10
    )
    client.up.start()
    await client.ready
    return client


async def wait_ready(ws: ClientConnection, relayed: bool) -> None:
    wanted = "session.updated" if relayed else "session.created"
    async for message in ws:
        if json.loads(message)["type"] == wanted:
            return


async def load(
    target: Target, sessions: int, seconds: float, relay_pid: int | None
) -> dict[str, Any]:
    run = Run()
    rss_before = rss_kb(relay_pid) if relay_pid else 0
    async with httpx.AsyncClient() as http:
        clients = [
            await open_streaming(target, http, f"bench-{target.name}-{i}", run)
            for i in range(sessions)
        ]
    warmup = 1.0
    measure_from = time.perf_counter() + warmup
    until = measure_from + seconds
    for client in clients:
        client.start(measure_from, until)
    cpu = await _cpu_window(relay_pid, warmup, seconds)
    await asyncio.sleep(max(0.0, until - time.perf_counter()) + 0.3)  # last echoes
    rss_busy = rss_kb(relay_pid) if relay_pid else 0
    await asyncio.gather(*(client.finish() for client in clients))
    rtts = sorted(run.rtts_ms)
    return {
        "p50": _pct(rtts, 50),
        "p95": _pct(rtts, 95),
        "p99": _pct(rtts, 99),
        "pairs": run.pairs,
        "lost": run.lost,
        "cpu_us_per_pair": cpu * 1e6 / run.pairs if run.pairs and relay_pid else None,
        "rss_before_kb": rss_before,
        "rss_busy_kb": rss_busy,
    }


async def _cpu_window(pid: int | None, warmup: float, seconds: float) -> float:
    if pid is None:
        return 0.0
    await asyncio.sleep(warmup)
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return cpu_seconds(pid) - before


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values)) - 1))
    return values[index]


# -- churn -------------------------------------------------------------------------------------


async def churn_one(target: Target, http: httpx.AsyncClient, index: int) -> None:
    ws = await target.open(http, f"churn-{index}")
    try:
        await wait_ready(ws, relayed=True)
        for _ in range(3):
            await ws.send('{"type":"input_audio_buffer.append","audio":"' + CHUNK + '"}')
        await ws.send('{"type":"response.create"}')
        async for message in ws:
            if isinstance(message, str) and '"response.output_audio.delta"' in message[:40]:
                break
        if index % 2:
            ws.transport.abort()  # vanish mid-response: no close frame
    finally:
        await ws.close()


async def churn(
    target: Target, total: int, warmup: int, stats_url: str, relay_pid: int
) -> dict[str, Any]:
    async def run_batch(first: int, count: int) -> None:
        # A client per batch, closed before anything is counted: its keep-alive HTTP
        # connections would otherwise show up as the relay's open sockets.
        async with httpx.AsyncClient() as http:
            await asyncio.gather(*(churn_one(target, http, first + i) for i in range(count)))

    async def settled() -> dict[str, Any]:
        # Sessions wind down within about a second; give them two.
        await asyncio.sleep(2.0)
        async with httpx.AsyncClient() as http:
            stats: dict[str, Any] = (await http.get(stats_url)).json()
        return stats

    batch = 50
    for start in range(0, warmup, batch):
        await run_batch(100_000 + start, min(batch, warmup - start))
    before = await settled()
    started = time.perf_counter()
    for start in range(0, total, batch):
        await run_batch(1000 + start, min(batch, total - start))
    elapsed = time.perf_counter() - started
    after = await settled()
    return {"before": before, "after": after, "sessions": total, "warmup": warmup,
            "seconds": round(elapsed, 1), "rss_pid_kb": rss_kb(relay_pid)}  # fmt: skip


# -- main ----------------------------------------------------------------------------------------


Row = tuple[int, str, list[dict[str, Any]], list[dict[str, Any]]]  # count, path, directs, runs


async def main(
    sessions: list[int], seconds: float, repeat: int, churn_total: int, churn_warmup: int
) -> None:
    sim_port, relay_port = free_port(), free_port()
    bare_port, lean_port = free_port(), free_port()
    upstream = f"ws://127.0.0.1:{sim_port}/v1/realtime"
    direct = Target("direct", upstream, None)
    relayed = Target(
        "relay", f"ws://127.0.0.1:{relay_port}/v1/realtime", f"http://127.0.0.1:{relay_port}"
    )
    async with (
        child("_simulator", str(sim_port), port=sim_port),
        child("_relay", str(relay_port), upstream, port=relay_port) as relay_process,
        child("_passthrough", str(bare_port), upstream, port=bare_port) as bare_process,
        child("_lean", str(lean_port), upstream, port=lean_port) as lean_process,
    ):
        paths = [
            (Target("bare pass-through", f"ws://127.0.0.1:{bare_port}/", None), bare_process.pid),
            (Target("lean pass-through", f"ws://127.0.0.1:{lean_port}/", None), lean_process.pid),
            (relayed, relay_process.pid),
        ]
        rows: list[Row] = []
        for count in sessions:
            directs: list[dict[str, Any]] = []
            runs: dict[str, list[dict[str, Any]]] = {target.name: [] for target, _ in paths}
            for round_ in range(repeat):  # interleaved, so drift hits every path alike
                directs.append(await load(direct, count, seconds, None))
                for target, pid in paths:
                    result = await load(target, count, seconds, pid)
                    runs[target.name].append(result)
                    print(f"{count} sessions, round {round_ + 1}, {target.name}: "
                          f"{_summary(directs[-1], result)}", flush=True)  # fmt: skip
            rows += [(count, name, directs, results) for name, results in runs.items()]
        print()
        print(_table(rows))
        if churn_total:
            result = await churn(
                relayed,
                churn_total,
                churn_warmup,
                f"http://127.0.0.1:{relay_port}/debug/stats",
                relay_process.pid,
            )
            print()
            print(_churn_table(result))


def _summary(base: dict[str, Any], result: dict[str, Any]) -> str:
    added = "/".join(f"{result[p] - base[p]:+.2f}" for p in ("p50", "p95", "p99"))
    return f"added p50/p95/p99 {added} ms, {result['cpu_us_per_pair']:.0f} µs per pair"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _table(rows: list[Row]) -> str:
    """Medians over the rounds; "added" is each round's path minus that round's direct run."""
    lines = [
        "| sessions | path | frame pairs | RTT p50 / p95 / p99 (ms) | direct p50 / p95 / p99 (ms) "
        "| added p50 / p95 / p99 (ms) | CPU µs per frame pair (rounds) | RSS per session (KiB) "
        "| lost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for count, name, directs, runs in rows:
        pcts = ("p50", "p95", "p99")
        rtt = [_median([run[p] for run in runs]) for p in pcts]
        base = [_median([d[p] for d in directs]) for p in pcts]
        added = [_median([run[p] - d[p] for run, d in zip(runs, directs, strict=True)])
                 for p in pcts]  # fmt: skip
        cpus = [run["cpu_us_per_pair"] for run in runs]
        rss = _median([(run["rss_busy_kb"] - run["rss_before_kb"]) / count for run in runs])
        lines.append(
            f"| {count} | {name} | {sum(run['pairs'] for run in runs)} "
            f"| {' / '.join(f'{v:.2f}' for v in rtt)} "
            f"| {' / '.join(f'{v:.2f}' for v in base)} "
            f"| {' / '.join(f'{v:+.2f}' for v in added)} "
            f"| {_median(cpus):.0f} ({', '.join(f'{c:.0f}' for c in cpus)}) "
            f"| {rss:.0f} "
            f"| {sum(run['lost'] for run in runs)} |"
        )
    return "\n".join(lines)


def _churn_table(result: dict[str, Any]) -> str:
    before, after = result["before"], result["after"]
    return "\n".join(
        [
            f"churn: {result['sessions']} sessions (half closed abruptly mid-response) "
            f"in {result['seconds']} s, after {result['warmup']} untimed",
            "| relay process | before | after |",
            "|---|---|---|",
            f"| asyncio tasks | {before['tasks']} | {after['tasks']} |",
            f"| open sockets | {before['sockets']} | {after['sockets']} |",
            f"| objects the collector tracks | {before['objects']} | {after['objects']} |",
            f"| RSS (MiB) | {before['rss_kb'] / 1024:.1f} | {after['rss_kb'] / 1024:.1f} |",
        ]
    )


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_simulator":
        _serve_simulator(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_passthrough":
        _serve_passthrough(int(sys.argv[2]), sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_lean":
        _serve_lean(int(sys.argv[2]), sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_relay":
        _serve_relay(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", default="1,50,100", help="comma-separated session counts")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds per count")
    parser.add_argument("--churn", type=int, default=1000, help="sessions for the churn run")
    parser.add_argument(
        "--churn-warmup", type=int, default=5000, help="sessions churned before counting"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",") if n]
    import uvloop  # under uvicorn[standard]; the relay process runs on it too

    uvloop.run(main(counts, args.seconds, args.repeat, args.churn, args.churn_warmup))


if __name__ == "__main__":
    cli()
