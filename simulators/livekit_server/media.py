"""A participant's WebRTC side, on aiortc: peer connections, forwarded audio, data channels.

`/rtc/v1` (single peer connection): the client is always the offerer. Its offer carries what it
publishes, its data channels (`_reliable`, `_lossy`, `_data_track`) and receive-only audio
sections it made in advance; the answer attaches the tracks this participant subscribes to to
free receive sections and names them in `mid_to_track_id`. When more sections are needed the
server sends `MediaSectionsRequirement` and the client offers again (LiveKit's
`sendUnmatchedMediaRequirement`).

`/rtc` (two peer connections): the client offers on the publisher connection when it publishes
or first sends data; the server offers on the subscriber connection at once (with its own
`_reliable` and `_lossy` channels) and again whenever a subscription changes.

Forwarded tracks carry msid `PA_<publisher>|TR_<track> TR_<track>`: both clients read the
publisher's sid from the stream id. Opus is forwarded as received, as LiveKit's SFU forwards
RTP: the stand-in's receivers hand on the jitter-buffered Opus packets undecoded
(`_forward_opus_undecoded`) and `MediaRelay` fans them out to the subscribers' senders, which
packetize them again (new SSRC, sequence numbers and timestamp origin, no RED). Decoding and
re-encoding every stream cost the stand-in's event loop a core at six meetings on this machine.

Offers are serialized per connection and a renegotiation waits until the connection is
connected: renegotiating while ICE/DTLS is still connecting left Chromium silent.

An ended subscription's media section goes inactive and is never reused (LiveKit reuses
sections); a later subscription gets a new one. Reusing it left the subscriber silent: aiortc's
sender stops for good when its track ends under it.

aiortc runs on the event loop that serves the signal socket; everything here is called on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
    rtcrtpreceiver,
)
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.codecs.opus import TIME_BASE
from aiortc.contrib.media import MediaRelay
from aiortc.exceptions import InvalidStateError
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import candidate_from_sdp
from av.frame import Frame
from av.packet import Packet
from google.protobuf.message import DecodeError
from livekit.protocol.models import (
    DataPacket,
    DisconnectReason,
    TrackInfo,
    TrackSource,
    TrackType,
)
from livekit.protocol.rtc import (
    AddTrackRequest,
    MediaSectionsRequirement,
    SessionDescription,
    SignalResponse,
    SignalTarget,
    TrackUnpublishedResponse,
    TrickleRequest,
)

from .rooms import Participant, PublishedTrack, Room, RoomManager, new_id

log = logging.getLogger("livekit_server.media")

_RELAY = MediaRelay()


class _UndecodedOpus(Decoder):
    """Hands each jitter-buffered Opus frame on as the packet it arrived as; aiortc's sender
    packetizes an `av.Packet` as is (`Encoder.pack`) instead of encoding a frame."""

    def decode(self, encoded_frame: JitterFrame) -> list[Frame]:
        packet = Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = TIME_BASE
        return [packet]  # type: ignore[list-item]  # the receiver queues whatever it gets


def _decoder_for(codec: RTCRtpCodecParameters) -> Decoder:
    if codec.mimeType.lower() == "audio/opus":
        return _UndecodedOpus()
    return get_decoder(codec)


def _forward_opus_undecoded() -> None:
    """aiortc's receivers pick their decoder through `rtcrtpreceiver.get_decoder`; the stand-in
    is the only user of aiortc in its process, and every track it receives is forwarded."""
    rtcrtpreceiver.get_decoder = _decoder_for  # type: ignore[attr-defined]


_forward_opus_undecoded()


class ForwardedTrack(MediaStreamTrack):
    """A subscriber's copy of a published track, with the track sid as its id (aiortc puts
    the track id into the msid)."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, track_sid: str) -> None:
        super().__init__()
        self._source = _RELAY.subscribe(source, buffered=False)
        self._sid = track_sid

    @property
    def id(self) -> str:
        return self._sid

    async def recv(self) -> Frame | Packet[Any]:
        return await self._source.recv()

    def stop(self) -> None:
        super().stop()
        self._source.stop()


@dataclass
class _Subscription:
    track: PublishedTrack
    forwarded: ForwardedTrack
    transceiver: RTCRtpTransceiver | None = None


@dataclass
class _Channels:
    """Data channels by label, and what waits for them to open."""

    open: dict[str, RTCDataChannel] = field(default_factory=dict)
    waiting: list[tuple[bytes, bool]] = field(default_factory=list)


class ParticipantMedia:
    """The peer connection(s) of one participant; implements rooms' `MediaLink`."""

    def __init__(self, rooms: RoomManager, room: Room, participant: Participant) -> None:
        self._rooms = rooms
        self._room = room
        self._participant = participant
        self._single = participant.single_pc
        self.publisher = self._new_pc("publisher")
        self.subscriber = None if self._single else self._new_pc("subscriber")
        self._pending_tracks: dict[str, AddTrackRequest] = {}  # cid -> request
        self._published_mids: dict[str, str] = {}  # mid -> TR sid of what the client sends
        self._track_sids: dict[str, str] = {}  # cid -> TR sid
        self._subscriptions: dict[str, _Subscription] = {}  # TR sid -> subscription
        self._retired: set[RTCRtpTransceiver] = set()  # sections of ended subscriptions
        self._channels = _Channels()
        self._lock = asyncio.Lock()
        self._early_candidates: dict[int, list[dict[str, object]]] = {0: [], 1: []}
        self._renegotiate = asyncio.Event()
        self._connected = asyncio.Event()
        self._closed = False
        self._answer_pending = False
        self._offer_id = 0
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._task = asyncio.get_running_loop().create_task(self._negotiator())

    # -- set-up ----------------------------------------------------------------------------

    def _new_pc(self, role: str) -> RTCPeerConnection:
        # No ICE servers: aiortc would otherwise ask a public STUN server. Max-bundle, as
        # LiveKit: a transceiver added later rides the existing transport instead of a new
        # ICE transport the client never connects (which left subscribers silent).
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        primary = role == "publisher" if self._single else role == "subscriber"

        @pc.on("connectionstatechange")
        def _state() -> None:
            state = pc.connectionState
            log.info(
                "peer connection state",
                extra={
                    "room": self._room.name,
                    "participant": self._participant.identity,
                    "pc": role,
                    "state": state,
                },
            )
            if primary and state == "connected":
                self._connected.set()
                self._rooms.activate(self._room, self._participant)
            elif primary and state in ("new", "connecting") and not self._closed:
                # aiortc reports "connecting" again while a renegotiated transceiver starts;
                # offering again before it is back up left the client silent.
                self._connected.clear()
            elif state == "failed" and primary and not self._closed:
                task = asyncio.get_running_loop().create_task(self._failed())
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

        @pc.on("datachannel")
        def _channel(channel: RTCDataChannel) -> None:
            self._attach_channel(channel)

        if role == "publisher":

            @pc.on("track")
            def _track(track: MediaStreamTrack) -> None:
                self._on_remote_track(pc, track)

        return pc

    async def _failed(self) -> None:
        await self._rooms.remove(self._room, self._participant, DisconnectReason.CONNECTION_TIMEOUT)

    async def start(self) -> None:
        """Open the subscriber connection (`/rtc` only): the server offers first."""
        if self.subscriber is not None:
            reliable = self.subscriber.createDataChannel("_reliable", ordered=True)
            lossy = self.subscriber.createDataChannel("_lossy", ordered=False, maxRetransmits=0)
            self._attach_channel(reliable)
            self._attach_channel(lossy)
            async with self._lock:
                await self._offer_subscriber()

    # -- signal input ----------------------------------------------------------------------

    def add_track(self, request: AddTrackRequest) -> TrackInfo | None:
        """AddTrackRequest: the track gets its sid now; it is published when media arrives."""
        if not self._participant.grants.video.can_publish:
            return None
        sid = self._track_sids.get(request.cid) or new_id("TR_")
        self._track_sids[request.cid] = sid
        self._pending_tracks[request.cid] = request
        return _track_info(request, sid, mid="")

    async def handle_offer(self, offer: SessionDescription) -> None:
        """The client's offer on the publisher connection (the only one on `/rtc/v1`)."""
        try:
            await self._answer_offer(offer)
        except InvalidStateError:
            if not self._closed_pc():
                raise
            # The participant left while its offer was being answered: nobody to answer.

    def _closed_pc(self) -> bool:
        return self.publisher.connectionState == "closed"

    async def _answer_offer(self, offer: SessionDescription) -> None:
        async with self._lock:
            pc = self.publisher
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            await self._apply_candidates(0)
            self._check_unpublished(offer.sdp)
            mid_to_track: dict[str, str] = {}
            missing = 0
            if self._single:
                missing = self._attach_subscriptions(pc, mid_to_track)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            local = pc.localDescription
            self._participant.send(
                SignalResponse(
                    answer=SessionDescription(
                        type="answer",
                        sdp=local.sdp,
                        id=offer.id,
                        mid_to_track_id=mid_to_track,
                    )
                )
            )
            self._bound()
            if missing:
                self._participant.send(
                    SignalResponse(
                        media_sections_requirement=MediaSectionsRequirement(num_audios=missing)
                    )
                )

    async def handle_answer(self, answer: SessionDescription) -> None:
        """The client's answer to a subscriber offer (`/rtc` only)."""
        if self.subscriber is None:
            log.warning("answer on a single peer connection", extra=self._fields())
            return
        async with self._lock:
            if self.subscriber.signalingState != "have-local-offer":
                log.warning("answer without an offer", extra=self._fields())
                return
            log.info("subscriber answer received", extra={**self._fields(), "offer_id": answer.id})
            await self.subscriber.setRemoteDescription(
                RTCSessionDescription(sdp=answer.sdp, type="answer")
            )
            await self._apply_candidates(1)
            self._bound()
            if self._answer_pending:
                self._answer_pending = False
                self._renegotiate.set()

    async def handle_trickle(self, trickle: TrickleRequest) -> None:
        try:
            init = json.loads(trickle.candidateInit)
        except ValueError:
            log.warning("unreadable ICE candidate", extra=self._fields())
            return
        if not isinstance(init, dict) or not init.get("candidate"):
            return  # end of candidates
        target = 1 if trickle.target == SignalTarget.SUBSCRIBER and not self._single else 0
        self._early_candidates[target].append(init)
        pc = self.subscriber if target == 1 else self.publisher
        if pc is not None and pc.remoteDescription is not None:
            await self._apply_candidates(target)

    async def _apply_candidates(self, target: int) -> None:
        pc = self.subscriber if target == 1 else self.publisher
        assert pc is not None
        waiting, self._early_candidates[target] = self._early_candidates[target], []
        for init in waiting:
            text = str(init["candidate"])
            try:
                candidate = candidate_from_sdp(text.split(":", 1)[1])
            except (IndexError, ValueError):
                log.warning("unreadable ICE candidate", extra=self._fields())
                continue
            candidate.sdpMid = init.get("sdpMid")  # type: ignore[assignment]
            index = init.get("sdpMLineIndex")
            candidate.sdpMLineIndex = index if isinstance(index, int) else None
            await pc.addIceCandidate(candidate)

    # -- tracks in -------------------------------------------------------------------------

    def _on_remote_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            log.info("ignoring a non-audio track", extra=self._fields())
            return
        transceiver = next((t for t in pc.getTransceivers() if t.receiver.track is track), None)
        mid = transceiver.mid if transceiver is not None and transceiver.mid else ""
        sections = _sections(pc.remoteDescription.sdp if pc.remoteDescription else "")
        cid = sections[mid].track_id if mid in sections else ""
        request = self._pending_tracks.pop(cid, None)
        if request is None and self._pending_tracks:
            # libwebrtc's msid may name no cid we know; take the oldest pending audio track.
            cid = next(iter(self._pending_tracks))
            request = self._pending_tracks.pop(cid)
        if request is None:
            log.warning("media for a track never announced", extra={**self._fields(), "mid": mid})
            return
        info = _track_info(request, self._track_sids[cid], mid=mid)
        self._published_mids[mid] = info.sid
        self._rooms.publish_track(
            self._room, PublishedTrack(info=info, publisher=self._participant, source=track)
        )

    def _check_unpublished(self, sdp: str) -> None:
        """A section the client no longer sends on is a track it unpublished (LiveKit learns
        it the same way: the client removes the sender and renegotiates)."""
        sections = _sections(sdp)
        for mid, sid in list(self._published_mids.items()):
            section = sections.get(mid)
            if section is None or section.direction not in ("sendonly", "sendrecv"):
                del self._published_mids[mid]
                if self._rooms.unpublish_track(self._room, self._participant, sid):
                    self._participant.send(
                        SignalResponse(track_unpublished=TrackUnpublishedResponse(track_sid=sid))
                    )

    # -- tracks out (MediaLink) ------------------------------------------------------------

    def subscribe(self, track: PublishedTrack) -> None:
        sid = track.info.sid
        if sid in self._subscriptions or self._closed:
            return
        source = track.source
        assert isinstance(source, MediaStreamTrack)
        self._subscriptions[sid] = _Subscription(track, ForwardedTrack(source, sid))
        log.info(
            "subscribed",
            extra={**self._fields(), "track_sid": sid, "publisher": track.publisher.identity},
        )
        self._renegotiate.set()

    def unsubscribe(self, track_sid: str) -> None:
        subscription = self._subscriptions.pop(track_sid, None)
        if subscription is None:
            return
        subscription.forwarded.stop()
        if subscription.transceiver is not None:
            # Never reused: aiortc's sender stops for good when its track ends under it, and
            # a client sees a new track on a section that went inactive first.
            subscription.transceiver.sender.replaceTrack(None)
            subscription.transceiver.direction = "inactive"
            self._retired.add(subscription.transceiver)
        self._renegotiate.set()

    def _attach_subscriptions(self, pc: RTCPeerConnection, mid_to_track: dict[str, str]) -> int:
        """Put every subscribed track on a receive section of the client's offer; returns how
        many more sections are needed."""
        used = {
            s.transceiver.mid for s in self._subscriptions.values() if s.transceiver is not None
        }
        sections = _sections(pc.remoteDescription.sdp if pc.remoteDescription else "")
        free = [
            t
            for t in pc.getTransceivers()
            if t.kind == "audio"
            and t.mid not in used
            and t.mid in sections
            and sections[t.mid].direction == "recvonly"
            and t.sender.track is None
            and t not in self._retired
        ]
        missing = 0
        for sid, subscription in self._subscriptions.items():
            if subscription.transceiver is None:
                if not free:
                    missing += 1
                    continue
                transceiver = free.pop(0)
                self._bind(transceiver, subscription)
            if subscription.transceiver is not None and subscription.transceiver.mid:
                mid_to_track[subscription.transceiver.mid] = sid
        return missing

    def _bound(self) -> None:
        """The negotiation just completed carries every subscription with a transceiver."""
        for subscription in self._subscriptions.values():
            if subscription.transceiver is not None and subscription.transceiver.mid:
                self._rooms.track_bound(self._room, subscription.track)

    def _bind(self, transceiver: RTCRtpTransceiver, subscription: _Subscription) -> None:
        transceiver.sender.replaceTrack(subscription.forwarded)
        # aiortc has no API for the msid stream id; clients read the publisher from it.
        transceiver.sender._stream_id = (  # noqa: SLF001
            f"{subscription.track.publisher.sid}|{subscription.track.info.sid}"
        )
        transceiver.direction = "sendonly"
        subscription.transceiver = transceiver

    async def _offer_subscriber(self) -> None:
        """A new offer on the subscriber connection with every subscription attached."""
        pc = self.subscriber
        assert pc is not None
        if pc.signalingState != "stable":
            return
        mid_to_track: dict[str, str] = {}
        for subscription in self._subscriptions.values():
            if subscription.transceiver is None:
                reusable = next(
                    (
                        t
                        for t in pc.getTransceivers()
                        if t.kind == "audio"
                        and t.sender.track is None
                        and t not in self._retired
                        and not any(s.transceiver is t for s in self._subscriptions.values())
                    ),
                    None,
                )
                transceiver = reusable or pc.addTransceiver("audio", direction="sendonly")
                self._bind(transceiver, subscription)
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        # A subscription added while the offer was made waits for the next one.
        for sid, subscription in self._subscriptions.items():
            if subscription.transceiver is not None and subscription.transceiver.mid:
                mid_to_track[subscription.transceiver.mid] = sid
        self._offer_id += 1
        log.info(
            "subscriber offer sent",
            extra={
                **self._fields(),
                "offer_id": self._offer_id,
                "tracks": sorted(mid_to_track.values()),
            },
        )
        self._participant.send(
            SignalResponse(
                offer=SessionDescription(
                    type="offer",
                    sdp=pc.localDescription.sdp,
                    id=self._offer_id,
                    mid_to_track_id=mid_to_track,
                )
            )
        )

    async def _negotiator(self) -> None:
        """Renegotiate when subscriptions changed, one negotiation at a time, and only once
        the primary connection is connected."""
        while True:
            await self._renegotiate.wait()
            await self._connected.wait()
            self._renegotiate.clear()
            if self._closed:
                return
            try:
                async with self._lock:
                    await self._negotiate()
            except Exception:
                log.exception("renegotiation failed", extra=self._fields())

    async def _negotiate(self) -> None:
        if self.subscriber is not None:
            if self.subscriber.signalingState != "stable":
                self._answer_pending = True  # the client's answer re-arms us
                return
            await self._offer_subscriber()
            return
        unattached = sum(1 for s in self._subscriptions.values() if s.transceiver is None)
        self._participant.send(
            SignalResponse(
                media_sections_requirement=MediaSectionsRequirement(num_audios=unattached)
            )
        )

    # -- data ------------------------------------------------------------------------------

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label

        @channel.on("open")
        def _open() -> None:
            self._channels.open[label] = channel
            self._flush()

        if channel.readyState == "open":
            self._channels.open[label] = channel

        @channel.on("message")
        def _message(message: bytes | str) -> None:
            if label not in ("_reliable", "_lossy") or not isinstance(message, bytes):
                return
            packet = DataPacket()
            try:
                packet.ParseFromString(message)
            except DecodeError:
                log.warning("undecodable data packet dropped", extra=self._fields())
                return
            self._rooms.route_data(
                self._room, self._participant, packet, reliable=label == "_reliable"
            )

    def send_data(self, packet: bytes, *, reliable: bool) -> None:
        self._channels.waiting.append((packet, reliable))
        self._flush()

    def _flush(self) -> None:
        still: list[tuple[bytes, bool]] = []
        for packet, reliable in self._channels.waiting:
            channel = self._channels.open.get("_reliable" if reliable else "_lossy")
            if channel is None or channel.readyState != "open":
                still.append((packet, reliable))
                continue
            channel.send(packet)
        self._channels.waiting = still

    # -- teardown --------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._renegotiate.set()
        self._connected.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for subscription in self._subscriptions.values():
            subscription.forwarded.stop()
        self._subscriptions.clear()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()
        # aiortc cancels its ICE consent and monitor tasks without awaiting them; let them end.
        for _ in range(3):
            await asyncio.sleep(0)

    def _fields(self) -> dict[str, str]:
        return {"room": self._room.name, "participant": self._participant.identity}


def _track_info(request: AddTrackRequest, sid: str, *, mid: str) -> TrackInfo:
    return TrackInfo(
        sid=sid,
        type=request.type or TrackType.AUDIO,
        name=request.name,
        muted=request.muted,
        source=request.source or TrackSource.MICROPHONE,
        mime_type="audio/opus",
        mid=mid,
        disable_dtx=request.disable_dtx,
        stereo=request.stereo,
        disable_red=True,  # aiortc never negotiates RED
        stream=request.stream,
        audio_features=list(request.audio_features),
    )


@dataclass
class _Section:
    direction: str = "sendrecv"
    track_id: str = ""


def _sections(sdp: str) -> dict[str, _Section]:
    """mid -> the section's direction and `a=msid` track id. aiortc reads the msid only when
    the stream id is listed in `msid-semantic`, and libwebrtc writes `a=msid:- <id>`."""
    found: dict[str, _Section] = {}
    section = _Section()
    for line in sdp.splitlines():
        if line.startswith("m="):
            section = _Section()
        elif line.startswith("a=mid:"):
            found[line[len("a=mid:") :].strip()] = section
        elif line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive"):
            section.direction = line[2:]
        elif line.startswith("a=msid:"):
            parts = line[len("a=msid:") :].split()
            if len(parts) == 2:
                section.track_id = parts[1]
    return found
