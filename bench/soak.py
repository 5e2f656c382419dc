"""Soak: well-behaved relay sessions while slow, abusive and vanishing clients come and go.

    .venv/bin/python -m bench.soak [--sessions 40] [--minutes 3] [--abusers 18]

Processes on 127.0.0.1, as in `bench.relay_overhead`: the OpenAI Realtime simulator in echo
mode, the gateway exactly as `voicegw serve` runs it, this load generator, and the abusers in a
process of their own (so their floods do not delay the generator's own timing). `--sessions`
well-behaved sessions stream 20 ms of audio every 20 ms for the whole run and time each
append's echo. The run has three equal phases:

1. baseline: the well-behaved sessions alone;
2. abuse: `--abusers` clients besides them, each repeating one attack for the whole phase:
   a client that never reads and floods empty binary frames or pings (17.1), a frame
   announcing 1 GiB (17.10), a flood of invalid events (rate limit), a header growing past
   the cap (17.3), a header dripped a line a second (17.11), a 500 MiB Content-Length
   (17.2), a session reading far slower than its audio arrives (1013), and a session that
   vanishes mid-stream without a close;
3. recovery: the abusers are gone.

Reported per phase: the well-behaved clients' echo p50/p99, their added p99 (minus a direct
run against the simulator beforehand), frames lost; and the gateway's RSS, open fds, sockets
and asyncio tasks at the end of each phase. Targets (issue 17): added p99 under abuse within
2x of the baseline's, and RSS after the abusers left within 10% of its start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.relay_overhead import (
    CHUNK,
    Run,
    StreamingClient,
    Target,
    _pct,
    child,
    free_port,
    load,
    open_streaming,
    rss_kb,
)

BIG_APPEND = '{"type":"input_audio_buffer.append","audio":"' + CHUNK * 25 + '"}'
MASK = b"\x01\x02\x03\x04"
EMPTY_BINARY = bytes((0x82, 0x80)) + MASK
PING = bytes((0x89, 0x80 | 125)) + MASK + bytes(125)
ONE_GIB_TEXT = bytes((0x81, 0xFF)) + (1 << 30).to_bytes(8, "big") + MASK

Attack = Callable[["Gateway"], Awaitable[str]]


class Gateway:
    """Where the attacks go, and what they saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.outcomes: Counter[str] = Counter()

    async def ticket(self, http: httpx.AsyncClient, session_id: str) -> str:
        response = await http.get(
            f"{self.url}/v1/session", params={"mode": "openai", "session_id": session_id}
        )
        response.raise_for_status()
        ticket: str = response.json()["relay"]["ticket"]
        return ticket


# -- attacks: each returns how it ended ---------------------------------------------------------


async def _raw_session(gw: Gateway, http: httpx.AsyncClient) -> socket.socket:
    """A raw relay session with a 2 KiB receive buffer that reads only the handshake answer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", gw.port))
    ticket = await gw.ticket(http, f"abuser-{id(sock)}")
    request = (
        "GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {ticket}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += await loop.sock_recv(sock, 1)
    return sock


async def _flood(gw: Gateway, frame: bytes) -> str:
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient() as http:
        sock = await _raw_session(gw, http)
    burst, deadline = frame * 2000, loop.time() + 15
    try:
        while loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loop.sock_sendall(sock, burst), 0.2)
        return "still open after 15 s"
    except OSError:
        return "cut off"
    finally:
        sock.close()


async def flood_binary(gw: Gateway) -> str:
    return await _flood(gw, EMPTY_BINARY)


async def flood_pings(gw: Gateway) -> str:
    return await _flood(gw, PING)


async def one_gib_frame(gw: Gateway) -> str:
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient() as http:
        sock = await _raw_session(gw, http)
    try:
        await loop.sock_sendall(sock, ONE_GIB_TEXT + bytes(65536))
        async with asyncio.timeout(10):
            while await loop.sock_recv(sock, 65536):
                pass
        return "closed"
    except OSError:
        return "cut off"
    finally:
        sock.close()


async def invalid_events(gw: Gateway) -> str:
    async with httpx.AsyncClient() as http:
        ticket = await gw.ticket(http, "abuser-invalid")
    try:
        async with connect(
            f"ws://127.0.0.1:{gw.port}/v1/realtime",
            additional_headers={"Authorization": f"Bearer {ticket}"},
            compression=None,
        ) as ws:
            for _ in range(1000):
                await ws.send('{"type":"response.create","response":{"Instructions":"x"}}')
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
    except ConnectionClosed as closed:
        return f"close {closed.rcvd.code if closed.rcvd else 'none'}"
    return "close (clean)"


async def _raw_http(gw: Gateway, head: bytes, then: Callable[[Any], Awaitable[None]]) -> str:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(head)
        await writer.drain()
        await then(writer)
        async with asyncio.timeout(70):
            line = await reader.readline()
            while await reader.read(65536):
                pass
        answer = f"HTTP {line.split(b' ')[1].decode()}" if line else "closed"
    except OSError:  # our writes met the closed connection
        answer = "closed"
    finally:
        writer.close()
    return f"{answer} after {time.perf_counter() - started:.0f} s"


async def huge_header(gw: Gateway) -> str:
    async def nothing(writer: Any) -> None:
        pass

    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
    return await _raw_http(gw, head, nothing)


async def slowloris(gw: Gateway) -> str:
    async def drip(writer: Any) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: uvloop, once closed
            for i in range(60):
                writer.write(b"X-%d: 1\r\n" % i)
                await writer.drain()
                await asyncio.sleep(1.0)

    return await _raw_http(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", drip)


async def huge_body(gw: Gateway) -> str:
    async def nothing(writer: Any) -> None:
        pass

    head = (
        b"POST /v1/session/fallback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 524288000\r\n\r\n"
    )
    return await _raw_http(gw, head, nothing)


async def slow_reader(gw: Gateway) -> str:
    async with httpx.AsyncClient() as http:
        ticket = await gw.ticket(http, "abuser-slow")
    try:
        async with connect(
            f"ws://127.0.0.1:{gw.port}/v1/realtime",
            additional_headers={"Authorization": f"Bearer {ticket}"},
            compression=None,
            max_queue=4,
        ) as ws:

            async def talk() -> None:
                while True:  # half a second of audio every 20 ms, each echoed back
                    await ws.send(BIG_APPEND)
                    await asyncio.sleep(0.02)

            talking = asyncio.create_task(talk())
            try:
                async with asyncio.timeout(30):
                    while True:
                        await ws.recv()
                        await asyncio.sleep(0.2)
            finally:
                talking.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await talking
    except ConnectionClosed as closed:
        return f"close {closed.rcvd.code}" if closed.rcvd else "cut off (read no close frame)"
    except TimeoutError:
        return "kept up for 30 s"
    return "close (clean)"


async def vanishing(gw: Gateway) -> str:
    run = Run()
    target = Target("relay", f"ws://127.0.0.1:{gw.port}/v1/realtime", gw.url)
    async with httpx.AsyncClient() as http:
        client = await open_streaming(target, http, "abuser-vanishing", run)
    now = time.perf_counter()
    client.start(now, now + 60)
    await asyncio.sleep(1.0 + (id(client) % 2000) / 1000)
    assert client.up is not None
    client.up.abort()  # gone mid-stream, no close frame
    await asyncio.sleep(0)
    return "vanished"


ATTACKS: dict[str, Attack] = {
    "flood of empty binary frames, never reading": flood_binary,
    "flood of pings, never reading": flood_pings,
    "frame announcing 1 GiB": one_gib_frame,
    "flood of invalid events": invalid_events,
    "header growing past the cap": huge_header,
    "header dripped a line a second": slowloris,
    "500 MiB Content-Length": huge_body,
    "reads far slower than its audio": slow_reader,
    "vanishes mid-stream": vanishing,
}


async def abuse(gw: Gateway, attack: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            outcome = await ATTACKS[attack](gw)
        except Exception as exc:  # an attack that fails is counted, not fatal to the run
            outcome = f"failed: {type(exc).__name__}: {exc}"[:100]
        gw.outcomes[f"{attack}: {outcome}"] += 1


async def abusers(port: int, count: int, seconds: float) -> None:
    """The abuse phase's clients (a child process): `count` of them for `seconds`, then the
    attacks' outcomes as JSON on stdout."""
    gw, stop = Gateway(port), asyncio.Event()
    kinds = list(ATTACKS)
    tasks = [asyncio.create_task(abuse(gw, kinds[i % len(kinds)], stop)) for i in range(count)]
    await asyncio.sleep(seconds)
    stop.set()  # each finishes the attack in progress (the slowest within about a minute)
    await asyncio.gather(*tasks)
    print(json.dumps(gw.outcomes))


# -- the gateway process -----------------------------------------------------------------------


async def gateway_stats(gw: Gateway, pid: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        stats: dict[str, Any] = (await http.get(f"{gw.url}/debug/stats")).json()
    stats["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    stats["rss_kb"] = rss_kb(pid)
    return stats


async def main(sessions: int, minutes: float, abusers: int) -> None:
    sim_port, relay_port = free_port(), free_port()
    upstream = f"ws://127.0.0.1:{sim_port}/v1/realtime"
    direct = Target("direct", upstream, None)
    relay = Target(
        "relay", f"ws://127.0.0.1:{relay_port}/v1/realtime", f"http://127.0.0.1:{relay_port}"
    )
    phase_s = minutes * 60 / 3
    async with (
        child("_simulator", str(sim_port), port=sim_port),
        child("_relay", str(relay_port), upstream, port=relay_port) as relay_process,
    ):
        gw = Gateway(relay_port)
        print(f"direct: {sessions} sessions for 10 s against the simulator", flush=True)
        direct_p99 = (await load(direct, sessions, 10, None))["p99"]
        run = Run()
        async with httpx.AsyncClient() as http:
            clients: list[StreamingClient] = [
                await open_streaming(relay, http, f"soak-{i}", run) for i in range(sessions)
            ]
        start = time.perf_counter() + 2.0  # a warm-up before anything counts
        for client in clients:
            client.start(start, start + 24 * 3600)  # until stopped
        await asyncio.sleep(2.0)
        stats = [await gateway_stats(gw, relay_process.pid)]
        windows: list[tuple[int, int]] = []
        phases = ["baseline", "abuse", "recovery"]
        for phase in phases:
            print(f"{phase}: {phase_s:.0f} s", flush=True)
            first = len(run.rtts_ms)
            if phase != "abuse":
                await asyncio.sleep(phase_s)
                windows.append((first, len(run.rtts_ms)))
            else:
                attack = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.soak", "_abusers", str(relay_port),
                    str(abusers), str(phase_s), stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                await asyncio.sleep(phase_s)
                windows.append((first, len(run.rtts_ms)))
                output, _ = await attack.communicate()  # their last attacks end
                gw.outcomes.update(json.loads(output))
                await asyncio.sleep(3.0)  # sessions wind down within about a second
            stats.append(await gateway_stats(gw, relay_process.pid))
        for client in clients:
            client.stop()
        await asyncio.sleep(0.5)  # the last echoes
        await asyncio.gather(*(client.finish() for client in clients))
    print()
    print(_report(sessions, abusers, direct_p99, run, windows, stats, phases, gw.outcomes))


def _report(
    sessions: int,
    abusers: int,
    direct_p99: float,
    run: Run,
    windows: list[tuple[int, int]],
    stats: list[dict[str, Any]],
    phases: list[str],
    outcomes: Counter[str],
) -> str:
    lines = [
        f"{sessions} well-behaved sessions; {abusers} abusers in the abuse phase; "
        f"direct p99 {direct_p99:.2f} ms",
        "| phase | echoes | p50 (ms) | p99 (ms) | added p99 (ms) | RSS (MiB) | fds | sockets "
        "| tasks |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| start | | | | | {stats[0]['rss_kb'] / 1024:.1f} | {stats[0]['fds']} "
        f"| {stats[0]['sockets']} | {stats[0]['tasks']} |",
    ]
    added: list[float] = []
    for phase, (first, last), after in zip(phases, windows, stats[1:], strict=True):
        rtts = sorted(run.rtts_ms[first:last])
        added.append(_pct(rtts, 99) - direct_p99)
        lines.append(
            f"| {phase} | {len(rtts)} | {_pct(rtts, 50):.2f} | {_pct(rtts, 99):.2f} "
            f"| {added[-1]:+.2f} | {after['rss_kb'] / 1024:.1f} | {after['fds']} "
            f"| {after['sockets']} | {after['tasks']} |"
        )
    ratio = added[1] / added[0] if added[0] > 0 else float("inf")
    rss_change = stats[3]["rss_kb"] / stats[0]["rss_kb"] - 1
    lines += [
        f"frames lost: {run.lost}",
        f"added p99 under abuse / baseline: {ratio:.2f}x (target <= 2x): "
        f"{'pass' if ratio <= 2 else 'FAIL'}",
        f"RSS at the end vs the start: {rss_change:+.1%} (target within 10%): "
        f"{'pass' if abs(rss_change) <= 0.10 else 'FAIL'}",
        "attacks and how they ended:",
        *(f"  {count:5d}  {what}" for what, count in sorted(outcomes.items())),
    ]
    return "\n".join(lines)


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_abusers":
        import uvloop

        uvloop.run(abusers(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=40, help="well-behaved sessions")
    parser.add_argument("--minutes", type=float, default=3.0, help="the whole run (3 phases)")
    parser.add_argument("--abusers", type=int, default=18, help="abusive clients at once")
    args = parser.parse_args()
    import uvloop  # under uvicorn[standard]; the gateway runs on it too

    uvloop.run(main(args.sessions, args.minutes, args.abusers))


if __name__ == "__main__":
    cli()
