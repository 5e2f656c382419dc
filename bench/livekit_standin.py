"""The LiveKit stand-in with real Python rtc participants (livekit 1.1.21, the SDK the agent
worker uses), inside a network namespace of its own (needs root):

- join: the SDK's `Room.connect()` (socket open -> JoinResponse -> primary peer connection
  connected, as the SDK awaits it), and the server's view: JoinResponse sent -> participant
  ACTIVE (its primary peer connection connected);
- audio latency through the relay: the publisher's first loud 10 ms frame handed to its
  AudioSource -> the first loud frame out of the listener's AudioStream (both sides' buffers
  and aiortc's jitter buffer and packetizing included; not LiveKit's SFU figure);
- server CPU with N participants each publishing a tone and hearing all others.

    .venv/bin/python bench/livekit_standin.py [--runs 5] [--sizes 2,4,6] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.livekit_server import LiveKitServer  # noqa: E402
from tests.netns import NetNamespace  # noqa: E402
from tests.simulators.livekit_server.conftest import KEYS, RtcParticipant, token  # noqa: E402

LOUD = 0.02 * 32767


class Marks(logging.Handler):
    """When the server logged each participant's join and activation (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.joined: dict[str, float] = {}
        self.active: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        who = getattr(record, "participant", "")
        if record.msg == "participant joined":
            self.joined[who] = time.monotonic()
        elif record.msg == "participant active":
            self.active[who] = time.monotonic()


def loud_from(identity: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["participant"] == identity and event["peak"] > LOUD


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def line(name: str, values: list[float]) -> str:
    return (
        f"{name:<44} n={len(values):<3} p50={statistics.median(values):7.1f} ms  "
        f"p95={pct(values, 0.95):7.1f} ms  max={max(values):7.1f} ms"
    )


async def joins_and_latency(server: LiveKitServer, marks: Marks, runs: int) -> None:
    connect_ms: list[float] = []
    server_active_ms: list[float] = []
    latency_ms: list[float] = []
    for run in range(runs):
        room = f"bench-{run}"
        async with (
            RtcParticipant.start(server.ws_url, token("speaker", room=room), "speaker") as speaker,
            RtcParticipant.start(server.ws_url, token("listener", room=room), "listener") as ear,
        ):
            for participant in (speaker, ear):
                connected = await participant.wait_for("connected")
                connect_ms.append(connected["join_ms"])
                await participant.wait_for("state")
            for who in ("speaker", "listener"):
                if who in marks.active and who in marks.joined:
                    server_active_ms.append((marks.active[who] - marks.joined[who]) * 1000)
            marks.joined.clear()
            marks.active.clear()
            await speaker.command("publish_sine", freq=440, seconds=1.5, lead_silence_s=1.5)
            sent = await speaker.wait_for("loud_sent")
            heard = await ear.wait_for(
                "audio", lambda e: e["participant"] == "speaker" and e["first_loud_ms"]
            )
            latency_ms.append(heard["first_loud_ms"] - sent["at_ms"])
    print(line("rtc SDK Room.connect() (join + media)", connect_ms))
    print(line("server: JoinResponse -> peer connection up", server_active_ms))
    print(line("audio through the relay (first loud frame)", latency_ms))


async def cpu(server: LiveKitServer, size: int, seconds: float) -> None:
    room = f"cpu-{size}"
    async with contextlib.AsyncExitStack() as stack:
        people = []
        for n in range(size):
            who = f"p{n}"
            participant = await stack.enter_async_context(
                RtcParticipant.start(server.ws_url, token(who, room=room), who)
            )
            await participant.wait_for("connected")
            people.append(participant)
        for participant in people:
            await participant.command("publish_sine", freq=300 + 50 * len(people), seconds=60)
        for participant in people:
            for other in people:
                if other is not participant:
                    await participant.wait_for("audio", loud_from(other.identity))
        started_cpu, started = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)  # a measurement window, not a wait for an event
        used = time.process_time() - started_cpu
        wall = time.monotonic() - started
        streams = size * (size - 1)
        print(
            f"server CPU, {size} participants ({streams} forwarded streams): "
            f"{100 * used / wall:5.1f}% of one core"
        )


async def main(runs: int, sizes: list[int], seconds: float) -> None:
    marks = Marks()
    logging.getLogger("livekit_server.rooms").addHandler(marks)
    logging.getLogger("livekit_server.rooms").setLevel(logging.INFO)
    logging.getLogger("livekit_server.agents").setLevel(logging.ERROR)  # no workers here
    namespace = NetNamespace().create()
    try:
        with namespace.entered():
            server = LiveKitServer(KEYS, rng=random.Random(1))
            async with server.serve(namespace.address):
                await joins_and_latency(server, marks, runs)
                for size in sizes:
                    await cpu(server, size, seconds)
    finally:
        namespace.delete()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="2,4,6")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.runs, [int(s) for s in args.sizes.split(",")], args.seconds))
