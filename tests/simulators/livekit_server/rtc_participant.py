"""A real Python `livekit` rtc participant in a process of its own, driven as JSON lines.

libwebrtc's runtime lives in the process it first runs in (and takes that thread's network
namespace), so each participant gets a process: born inside the test's namespace, it gathers
ICE candidates on the namespace's veth address. It prints one JSON event per line on stdout and
reads one JSON command per line on stdin:

    events:   connected {join_ms, connected_ms, sid}, subscribed {participant, track_sid},
              audio {participant, track_sid, frames, peak, audible, first_loud_ms}
              (`audible`: samples above the loudness threshold so far),
              data {participant, topic, payload}, attributes {participant, attributes},
              local_track_subscribed {track_sid} (someone subscribed to what we publish),
              disconnected {reason}, error
    commands: publish_sine {freq, seconds, lead_silence_s}, publish_wav {path},
              send_data {payload, topic, destinations, reliable},
              set_attributes {attributes}, unpublish, leave

`python -m tests.simulators.livekit_server.rtc_participant URL TOKEN`
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import wave
from typing import Any

import numpy as np
from livekit import rtc

RATE = 48000
FRAME = 480  # 10 ms
LOUD = 0.02 * 32767


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


published: list[str] = []


async def publish(room: rtc.Room, samples: np.ndarray[Any, np.dtype[np.int16]]) -> None:
    # A short queue: capture_frame returns when the frame is close to being sent, so the
    # `loud_sent` time is a fair start for a latency figure.
    source = rtc.AudioSource(RATE, 1, queue_size_ms=50)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await room.local_participant.publish_track(track, options)
    emit("published", track_sid=publication.sid, at_ms=time.time() * 1000)
    published.append(publication.sid)
    loud_sent = False
    for start in range(0, len(samples) - FRAME + 1, FRAME):
        chunk = samples[start : start + FRAME]
        frame = rtc.AudioFrame(
            data=chunk.tobytes(), sample_rate=RATE, num_channels=1, samples_per_channel=FRAME
        )
        await source.capture_frame(frame)
        if not loud_sent and int(np.abs(chunk.astype(np.int32)).max()) > LOUD:
            loud_sent = True
            emit("loud_sent", at_ms=time.time() * 1000)
    await source.wait_for_playout()
    emit("played")


def sine(
    freq: float, seconds: float, lead_silence_s: float = 0.0
) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(int(RATE * seconds)) / RATE
    tone = (np.sin(2 * math.pi * freq * t) * 0.3 * 32767).astype(np.int16)
    return np.concatenate([np.zeros(int(RATE * lead_silence_s), dtype=np.int16), tone])


def wav(path: str) -> np.ndarray[Any, np.dtype[np.int16]]:
    with wave.open(path, "rb") as reader:
        assert reader.getframerate() == RATE and reader.getnchannels() == 1
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)


async def listen(track: rtc.Track, participant: rtc.RemoteParticipant) -> None:
    stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
    frames = 0
    peak = 0
    audible = 0
    first_loud_ms: float | None = None
    last_report = 0.0
    async for event in stream:
        samples = np.frombuffer(event.frame.data, dtype=np.int16)
        frames += 1
        magnitudes = np.abs(samples.astype(np.int32))
        frame_peak = int(magnitudes.max()) if len(samples) else 0
        audible += int(np.count_nonzero(magnitudes > LOUD))
        peak = max(peak, frame_peak)
        if first_loud_ms is None and frame_peak > LOUD:
            first_loud_ms = time.time() * 1000
        now = time.monotonic()
        if now - last_report > 0.2:
            last_report = now
            emit(
                "audio",
                participant=participant.identity,
                track_sid=track.sid,
                frames=frames,
                peak=peak,
                audible=audible,
                first_loud_ms=first_loud_ms,
            )


async def main(url: str, token: str) -> None:
    room = rtc.Room()
    tasks: set[asyncio.Task[None]] = set()
    done = asyncio.Event()

    def spawn(coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    @room.on("track_subscribed")
    def _subscribed(
        track: rtc.Track, publication: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
    ) -> None:
        emit("subscribed", participant=who.identity, track_sid=publication.sid)
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            spawn(listen(track, who))

    @room.on("data_received")
    def _data(packet: rtc.DataPacket) -> None:
        sender = packet.participant.identity if packet.participant else ""
        emit("data", participant=sender, topic=packet.topic, payload=packet.data.decode())

    @room.on("participant_attributes_changed")
    def _attributes(changed: dict[str, str], who: rtc.Participant) -> None:
        emit("attributes", participant=who.identity, attributes=dict(who.attributes))

    @room.on("track_unpublished")
    def _unpublished(publication: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
        emit("track_unpublished", participant=who.identity, track_sid=publication.sid)

    @room.on("local_track_subscribed")
    def _local_subscribed(track: rtc.Track) -> None:
        emit("local_track_subscribed", track_sid=track.sid)

    @room.on("participant_connected")
    def _joined(who: rtc.RemoteParticipant) -> None:
        emit("participant_joined", participant=who.identity)

    @room.on("disconnected")
    def _disconnected(reason: Any) -> None:
        emit("disconnected", reason=str(reason))
        done.set()

    @room.on("connection_state_changed")
    def _state(state: Any) -> None:
        emit("state", state=int(state), at_ms=time.time() * 1000)

    started = time.monotonic()
    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=True))
    joined = time.monotonic()
    emit(
        "connected",
        sid=room.local_participant.sid,
        join_ms=(joined - started) * 1000,
        others=[p.identity for p in room.remote_participants.values()],
    )

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not done.is_set():
        line_task = asyncio.ensure_future(reader.readline())
        done_task = asyncio.ensure_future(done.wait())
        finished, _ = await asyncio.wait({line_task, done_task}, return_when="FIRST_COMPLETED")
        if done_task in finished:
            line_task.cancel()
            break
        done_task.cancel()
        line = line_task.result()
        if not line:
            break
        command = json.loads(line)
        name = command.pop("cmd")
        try:
            if name == "publish_sine":
                lead = command.get("lead_silence_s", 0.0)
                spawn(publish(room, sine(command["freq"], command["seconds"], lead)))
            elif name == "publish_wav":
                spawn(publish(room, wav(command["path"])))
            elif name == "send_data":
                await room.local_participant.publish_data(
                    command["payload"],
                    reliable=command.get("reliable", True),
                    destination_identities=command.get("destinations", []),
                    topic=command.get("topic", ""),
                )
                emit("sent")
            elif name == "set_attributes":
                await room.local_participant.set_attributes(command["attributes"])
                emit("attributes_set")
            elif name == "unpublish":
                for sid in published:
                    await room.local_participant.unpublish_track(sid)
                emit("unpublished")
            elif name == "leave":
                break
        except Exception as exc:  # the driver sees it as an event
            emit("error", command=name, error=repr(exc))
    await room.disconnect()
    for task in list(tasks):
        task.cancel()
    emit("left")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
