"""The relay's own Python per frame pair, without sockets or an event loop's I/O.

    .venv/bin/python -m bench.relay_hotpath [--pairs 100000] [--rounds 9]

One relay session (`RelaySession` with its real client leg, upstream leg and protocol core)
is wired to two transports that only count what is written. Each frame pair is what the
benchmark's load sends: a masked 20 ms `input_audio_buffer.append` into the client leg, and
its `response.output_audio.delta` into the upstream leg. The baseline, timed in the same
rounds, is the lean pass-through of `bench.relay_overhead`: the same two legs' framing joined
directly, with no gate, no state and no session. Reports the median and p95 over rounds of
µs per frame pair, and the ratio to the baseline.

`bench.relay_overhead` measures the whole process under load (kernel and event loop
included); this isolates the part the relay's code decides.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
from collections.abc import Callable
from typing import Any

from pipelines.openai_realtime import RelayLimits
from relay.client_leg import DirectLeg
from relay.config import RelayConfig
from relay.session import RelaySession
from relay.upstream import Upstream
from relay.wire import TEXT, FrameReader, accept_value, encode_frame, new_key

AUDIO = base64.b64encode(bytes(960)).decode()  # 20 ms of pcm16 at 24 kHz
APPEND = f'{{"type":"input_audio_buffer.append","event_id":"42","audio":"{AUDIO}"}}'.encode()
DELTA = (
    '{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1",'
    f'"item_id":"42","output_index":0,"content_index":0,"delta":"{AUDIO}"}}'
).encode()
CREATED = b'{"type":"response.created","event_id":"event_0","response":{"id":"resp_1"}}'


class CountingTransport:
    """The part of an asyncio transport the legs use; counts what is written."""

    def __init__(self) -> None:
        self.frames = 0

    def write(self, data: bytes) -> None:
        self.frames += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class _UvicornConfig:
    ws_max_size = 16 * 1024 * 1024


class _Protocol:
    """What a DirectLeg reads from its uvicorn protocol."""

    def __init__(self) -> None:
        self.transport = CountingTransport()
        self.config = _UvicornConfig()
        self.disconnected = False

    def stop_keepalive(self) -> None:
        pass


def _upstream(sink: Any) -> tuple[Upstream, CountingTransport]:
    key = new_key()
    upstream = Upstream(sink, b"", key, 16 * 1024 * 1024)
    transport = CountingTransport()
    upstream.connection_made(transport)  # type: ignore[arg-type]
    upstream.data_received(  # the handshake's answer, checked like OpenAI's
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_value(key).encode() + b"\r\n\r\n"
    )
    upstream.start()
    return upstream, transport


def relay_pair() -> tuple[Callable[[], None], list[CountingTransport]]:
    """One frame pair through a relay session; returns it and the transports to check."""
    config = RelayConfig(
        ticket_secret="bench-secret-bench-secret-bench!",
        api_key="bench-key",
        limits=RelayLimits(max_messages_per_second=10**9),  # the loop outruns real time
    )
    session = RelaySession(session_id="bench", config=config)
    protocol = _Protocol()
    leg = DirectLeg(protocol, session, None, config.limits.max_frame_bytes)  # type: ignore[arg-type]
    upstream, up_transport = _upstream(session)
    # Wired as run() wires them once the upstream is open (run() would also connect).
    session._client, session._upstream = leg, upstream
    for frame in (CREATED, DELTA):  # the response's first delta sets "speaking"
        upstream.data_received(encode_frame(TEXT, frame, mask=False))
    return _frame_pair(leg.data_received, upstream), [protocol.transport, up_transport]


class _LeanClient:
    """The lean pass-through's client side: frames straight to the upstream and back."""

    def __init__(self) -> None:
        self.transport = CountingTransport()
        self.reader = FrameReader(masked=True, max_size=16 * 1024 * 1024)
        self.up: Upstream | None = None

    def data_received(self, data: bytes) -> None:
        assert self.up is not None
        for opcode, payload in self.reader.feed(data):
            if opcode == TEXT:
                self.up.send_text(payload)

    def on_upstream_message(self, payload: bytes) -> None:
        self.transport.write(encode_frame(TEXT, payload, mask=False))

    def on_upstream_closed(self) -> None:
        pass

    def on_upstream_backpressure(self, paused: bool) -> None:
        pass

    def on_upstream_unresponsive(self) -> None:
        pass


def lean_pair() -> tuple[Callable[[], None], list[CountingTransport]]:
    client = _LeanClient()
    upstream, up_transport = _upstream(client)
    client.up = upstream
    return _frame_pair(client.data_received, upstream), [client.transport, up_transport]


def _frame_pair(client_side: Callable[[bytes], None], upstream: Upstream) -> Callable[[], None]:
    """One frame pair as the load sends it: a masked append into the client side, then its
    delta into the upstream leg."""
    client_frame = encode_frame(TEXT, APPEND, mask=True)
    upstream_frame = encode_frame(TEXT, DELTA, mask=False)

    def pair() -> None:
        client_side(client_frame)
        upstream.data_received(upstream_frame)

    return pair


def _round(pair: Callable[[], None], pairs: int) -> float:
    started = time.perf_counter()
    for _ in range(pairs):
        pair()
    return (time.perf_counter() - started) / pairs * 1e6


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def main(pairs: int, rounds: int) -> None:
    paths = {"lean pass-through (baseline)": lean_pair(), "relay": relay_pair()}
    results: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):  # interleaved, so drift hits both alike
        for name, (pair, _) in paths.items():
            results[name].append(_round(pair, pairs))
    for name, (_, transports) in paths.items():
        written = [t.frames for t in transports]
        # Every frame in got its frame out on the other side: the hot path did its work.
        assert min(written) >= rounds * pairs, (name, written)
    base = statistics.median(results["lean pass-through (baseline)"])
    print(f"{pairs} frame pairs per round, {rounds} interleaved rounds")
    print(f"{'path':30} {'median µs':>10} {'p95 µs':>8} {'x baseline':>11}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:30} {median:10.2f} {_p95(values):8.2f} {median / base:11.2f}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=100_000, help="frame pairs per round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    args = parser.parse_args()
    asyncio.run(main(args.pairs, args.rounds))  # the legs make futures on the running loop


if __name__ == "__main__":
    cli()
