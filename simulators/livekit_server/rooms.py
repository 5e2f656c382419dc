"""Rooms and participants: the state every other part of the stand-in reads and changes.

It follows livekit `pkg/rtc/room.go` and `pkg/service/roommanager.go` where a client can tell:
a room is created by the first join (or CreateRoom / CreateDispatch); a token's
RoomConfiguration applies only when that join creates the room, and its agent dispatches are
launched then (with none listed, one dispatch of the unnamed agent, for backward
compatibility); a room with no independent participant (agents and egress do not count) closes
after its empty timeout (never joined) or departure timeout (everyone left); a closing room
sends `LeaveRequest{DISCONNECT, reason}` to whoever is still there and ends their jobs.

The module holds no socket: a participant's signal messages go into its outbox (the signal
layer writes them), its media through a `MediaLink` (the media layer implements it), agent jobs
through a `JobLauncher` (the agent layer). That keeps every rule here testable on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import AgentDispatch, AgentDispatchState, RoomAgentDispatch
from livekit.protocol.models import (
    DataPacket,
    DisconnectReason,
    ParticipantInfo,
    ServerInfo,
    TrackInfo,
)
from livekit.protocol.models import Room as RoomProto
from livekit.protocol.room import RoomConfiguration
from livekit.protocol.rtc import (
    JoinResponse,
    LeaveRequest,
    ParticipantUpdate,
    RequestResponse,
    SignalResponse,
    TrackSubscribed,
    UpdateParticipantMetadata,
)

from .auth import Grants

log = logging.getLogger("livekit_server.rooms")

# LiveKit's defaults (`config.go`): 5 minutes empty timeout, 20 s departure timeout;
# clients ping every 5 s and give up after 15 s without an answer.
EMPTY_TIMEOUT_S = 300
DEPARTURE_TIMEOUT_S = 20
PING_INTERVAL_S = 5
PING_TIMEOUT_S = 15
PROTOCOL_VERSION = 16
SERVER_VERSION = "1.9.11"
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_id(prefix: str) -> str:
    """A LiveKit-style id: prefix (`RM_`, `PA_`, `TR_`, `AD_`, `AJ_`, `AW_`) + 12 characters."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


def server_info() -> ServerInfo:
    return ServerInfo(
        edition=ServerInfo.Edition.Standard,
        version=SERVER_VERSION,
        protocol=PROTOCOL_VERSION,
        agent_protocol=1,
        node_id="ND_standin",
        region="local",
    )


class RoomError(Exception):
    """A request the room state refuses; `code` is the Twirp/psrpc code LiveKit uses."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ROOM_NOT_FOUND = RoomError("not_found", "requested room does not exist")


@dataclass
class PublishedTrack:
    """A track a participant publishes: its info and the media source subscribers read."""

    info: TrackInfo
    publisher: Participant
    source: object  # the media layer's handle (an aiortc MediaStreamTrack)
    ever_subscribed: bool = False


class MediaLink(Protocol):
    """What the room asks of a participant's peer connection(s)."""

    def subscribe(self, track: PublishedTrack) -> None: ...

    def unsubscribe(self, track_sid: str) -> None: ...

    def send_data(self, packet: bytes, *, reliable: bool) -> None: ...

    async def close(self) -> None: ...


class JobLauncher(Protocol):
    """What the room asks of the agent dispatcher."""

    def launch(self, room: Room, dispatch: AgentDispatch) -> None: ...

    def terminate(self, job_id: str, *, agent_left: bool) -> None: ...


@dataclass(eq=False)
class Participant:
    """One signal connection's participant. `outbox` holds the SignalResponses the signal
    layer has yet to write; `closed` is set once it has left the room."""

    identity: str
    grants: Grants
    single_pc: bool
    auto_subscribe: bool = True
    sid: str = field(default_factory=lambda: new_id("PA_"))
    state: ParticipantInfo.State = ParticipantInfo.State.JOINING
    tracks: dict[str, TrackInfo] = field(default_factory=dict)
    joined_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    version: int = 0
    client_protocol: int = 0
    outbox: asyncio.Queue[SignalResponse | None] = field(default_factory=asyncio.Queue)
    media: MediaLink | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    disconnect_reason: DisconnectReason = DisconnectReason.UNKNOWN_REASON
    last_reliable_seq: int = 0

    def __post_init__(self) -> None:
        claims = self.grants.claims
        self.name = claims.name or ""
        self.metadata = claims.metadata or ""
        self.attributes: dict[str, str] = dict(claims.attributes or {})

    @property
    def hidden(self) -> bool:
        return bool(self.grants.video.hidden)

    def send(self, response: SignalResponse) -> None:
        if not self.closed.is_set():
            self.outbox.put_nowait(response)

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            state=self.state,
            tracks=list(self.tracks.values()),
            metadata=self.metadata,
            joined_at=self.joined_at_ms // 1000,
            joined_at_ms=self.joined_at_ms,
            name=self.name,
            version=self.version,
            permission=self.grants.permission(),
            is_publisher=bool(self.tracks),
            kind=self.grants.kind,
            attributes=self.attributes,
            disconnect_reason=self.disconnect_reason,
            client_protocol=self.client_protocol,
        )

    def changed(self) -> None:
        self.version += 1


@dataclass(eq=False)
class Room:
    proto: RoomProto
    participants: dict[str, Participant] = field(default_factory=dict)
    dispatches: dict[str, AgentDispatch] = field(default_factory=dict)
    published: dict[str, PublishedTrack] = field(default_factory=dict)
    agent_jobs: dict[str, str] = field(default_factory=dict)  # agent identity -> job id
    first_joined_at: float = 0.0
    last_left_at: float = 0.0
    closed: bool = False

    @property
    def name(self) -> str:
        return self.proto.name

    def to_proto(self) -> RoomProto:
        proto = RoomProto()
        proto.CopyFrom(self.proto)
        visible = [p for p in self.participants.values() if not p.hidden]
        proto.num_participants = len(visible)
        proto.num_publishers = sum(1 for p in visible if p.tracks)
        return proto

    def jobs(self) -> list[str]:
        return [job.id for d in self.dispatches.values() for job in d.state.jobs]


@dataclass
class RoomManager:
    """Every room of the server. `agents` launches and ends agent jobs."""

    agents: JobLauncher | None = None
    idle_check_s: float = 1.0
    rooms: dict[str, Room] = field(default_factory=dict)
    on_room_closed: list[Callable[[Room], None]] = field(default_factory=list)

    # -- rooms -----------------------------------------------------------------------------

    def get(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise ROOM_NOT_FOUND
        return room

    def get_or_create(
        self, name: str, config: RoomConfiguration | None = None
    ) -> tuple[Room, bool]:
        """The room called `name`; a new one gets `config` (timeouts, metadata, agents)."""
        room = self.rooms.get(name)
        if room is not None:
            return room, False
        now = time.time()
        config = config or RoomConfiguration()
        proto = RoomProto(
            sid=new_id("RM_"),
            name=name,
            empty_timeout=config.empty_timeout or EMPTY_TIMEOUT_S,
            departure_timeout=config.departure_timeout or DEPARTURE_TIMEOUT_S,
            max_participants=config.max_participants,
            creation_time=int(now),
            creation_time_ms=int(now * 1000),
            metadata=config.metadata,
        )
        room = Room(proto=proto)
        self.rooms[name] = room
        log.info(
            "room created",
            extra={"room": name, "room_sid": proto.sid, "agents": len(config.agents)},
        )
        # With no agent listed LiveKit still dispatches the unnamed agent (backward compat).
        for agent in list(config.agents) or [RoomAgentDispatch()]:
            self.add_dispatch(room, agent.agent_name, agent.metadata)
        return room, True

    def add_dispatch(self, room: Room, agent_name: str, metadata: str) -> AgentDispatch:
        dispatch = AgentDispatch(
            id=new_id("AD_"),
            agent_name=agent_name,
            room=room.name,
            metadata=metadata,
            state=AgentDispatchState(created_at=time.time_ns()),
        )
        room.dispatches[dispatch.id] = dispatch
        log.info(
            "agent dispatch created",
            extra={"room": room.name, "dispatch_id": dispatch.id, "agent_name": agent_name},
        )
        if self.agents is not None:
            self.agents.launch(room, dispatch)
        return dispatch

    def delete_dispatch(self, room: Room, dispatch_id: str) -> AgentDispatch:
        dispatch = room.dispatches.pop(dispatch_id, None)
        if dispatch is None:
            raise RoomError("not_found", "dispatch ID not found")
        for job in dispatch.state.jobs:
            if self.agents is not None and job.state.status == JobStatus.JS_RUNNING:
                self.agents.terminate(job.id, agent_left=False)
        return dispatch

    async def close_room(self, room: Room, reason: DisconnectReason) -> None:
        """Close `room`: everyone still in it is told why and removed, its jobs end."""
        if room.closed:
            return
        room.closed = True
        log.info("room closing", extra={"room": room.name, "reason": _reason(reason)})
        for participant in list(room.participants.values()):
            participant.send(
                SignalResponse(
                    leave=LeaveRequest(
                        reason=reason, action=LeaveRequest.Action.DISCONNECT, can_reconnect=False
                    )
                )
            )
            await self.remove(room, participant, reason)
        if self.agents is not None:
            for dispatch in room.dispatches.values():
                for job in dispatch.state.jobs:
                    if job.state.status in (JobStatus.JS_PENDING, JobStatus.JS_RUNNING):
                        self.agents.terminate(job.id, agent_left=False)
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        for callback in self.on_room_closed:
            callback(room)
        log.info("room closed", extra={"room": room.name, "room_sid": room.proto.sid})

    async def close_idle_rooms(self, now: float | None = None) -> None:
        """LiveKit's `CloseIfEmpty` for every room."""
        now = time.time() if now is None else now
        for room in list(self.rooms.values()):
            if room.closed or any(not p.grants.dependent for p in room.participants.values()):
                continue
            if room.first_joined_at and room.last_left_at:
                elapsed, timeout, why = (
                    now - room.last_left_at,
                    room.proto.departure_timeout,
                    "departure timeout",
                )
            else:
                elapsed, timeout, why = (
                    now - room.proto.creation_time_ms / 1000,
                    room.proto.empty_timeout,
                    "empty timeout",
                )
            if elapsed >= timeout:
                log.info("closing idle room", extra={"room": room.name, "why": why})
                await self.close_room(room, DisconnectReason.ROOM_CLOSED)

    async def run_idle_checks(self) -> None:
        """Check for idle rooms forever; cancelling it is safe."""
        while True:
            await asyncio.sleep(self.idle_check_s)
            await self.close_idle_rooms()

    async def close_all(self) -> None:
        for room in list(self.rooms.values()):
            await self.close_room(room, DisconnectReason.SERVER_SHUTDOWN)

    # -- participants ----------------------------------------------------------------------

    async def join(self, room: Room, participant: Participant) -> None:
        """Add `participant` (replacing one with the same identity, as LiveKit does) and
        send its JoinResponse."""
        if room.closed:
            raise RoomError("not_found", "room closed")
        existing = room.participants.get(participant.identity)
        if existing is not None:
            log.info(
                "removing duplicate participant",
                extra={"room": room.name, "participant": participant.identity},
            )
            existing.send(
                SignalResponse(
                    leave=LeaveRequest(
                        reason=DisconnectReason.DUPLICATE_IDENTITY,
                        action=LeaveRequest.Action.DISCONNECT,
                    )
                )
            )
            await self.remove(room, existing, DisconnectReason.DUPLICATE_IDENTITY)
        if room.proto.max_participants and not participant.grants.dependent:
            independent = sum(1 for p in room.participants.values() if not p.grants.dependent)
            if independent >= room.proto.max_participants:
                raise RoomError("resource_exhausted", "room is full")
        if not room.first_joined_at and not participant.grants.dependent:
            room.first_joined_at = time.time()
        others = [p.info() for p in room.participants.values() if not p.hidden]
        room.participants[participant.identity] = participant
        participant.state = ParticipantInfo.State.JOINED
        participant.changed()
        room.proto.version.unix_micro = int(time.time() * 1e6)
        info = server_info()
        participant.send(
            SignalResponse(
                join=JoinResponse(
                    room=room.to_proto(),
                    participant=participant.info(),
                    other_participants=others,
                    server_version=info.version,
                    server_region=info.region,
                    server_info=info,
                    subscriber_primary=not participant.single_pc,
                    ping_interval=PING_INTERVAL_S,
                    ping_timeout=PING_TIMEOUT_S,
                    fast_publish=participant.grants.video.can_publish,
                )
            )
        )
        log.info(
            "participant joined",
            extra={
                "room": room.name,
                "participant": participant.identity,
                "participant_sid": participant.sid,
                "kind": ParticipantInfo.Kind.Name(participant.grants.kind),
                "single_pc": participant.single_pc,
            },
        )
        self._broadcast(room, participant, skip_source=True)

    def activate(self, room: Room, participant: Participant) -> None:
        """The participant's primary transport connected: it is ACTIVE and receives every
        track already published (auto-subscribe)."""
        if participant.state != ParticipantInfo.State.JOINED or participant.closed.is_set():
            return
        participant.state = ParticipantInfo.State.ACTIVE
        participant.changed()
        log.info(
            "participant active", extra={"room": room.name, "participant": participant.identity}
        )
        self._broadcast(room, participant, skip_source=True)
        if participant.auto_subscribe and participant.grants.video.can_subscribe:
            for track in room.published.values():
                if track.publisher is not participant and participant.media is not None:
                    participant.media.subscribe(track)

    async def remove(self, room: Room, participant: Participant, reason: DisconnectReason) -> None:
        """Take `participant` out of `room` (idempotent): its tracks go, the others hear of it,
        an agent's job is terminated, the signal connection is closed."""
        if room.participants.get(participant.identity) is not participant:
            return
        del room.participants[participant.identity]
        participant.state = ParticipantInfo.State.DISCONNECTED
        participant.disconnect_reason = reason
        participant.changed()
        for sid in list(participant.tracks):
            self._drop_track(room, sid)
        participant.tracks.clear()
        room.last_left_at = time.time()
        job_id = room.agent_jobs.pop(participant.identity, None)
        if job_id is not None and self.agents is not None:
            self.agents.terminate(job_id, agent_left=True)
        log.info(
            "participant left",
            extra={
                "room": room.name,
                "participant": participant.identity,
                "reason": _reason(reason),
            },
        )
        self._broadcast(room, participant, skip_source=True)
        participant.closed.set()
        participant.outbox.put_nowait(None)
        if participant.media is not None:
            with contextlib.suppress(Exception):
                await participant.media.close()

    # -- tracks ----------------------------------------------------------------------------

    def publish_track(self, room: Room, track: PublishedTrack) -> None:
        """Media of a track announced with AddTrackRequest arrived: the others subscribe."""
        publisher = track.publisher
        room.published[track.info.sid] = track
        publisher.tracks[track.info.sid] = track.info
        publisher.changed()
        log.info(
            "track published",
            extra={
                "room": room.name,
                "participant": publisher.identity,
                "track_sid": track.info.sid,
            },
        )
        self._broadcast(room, publisher, skip_source=True)
        for other in room.participants.values():
            if (
                other is not publisher
                and other.state == ParticipantInfo.State.ACTIVE
                and other.auto_subscribe
                and other.grants.video.can_subscribe
                and other.media is not None
            ):
                other.media.subscribe(track)

    def track_bound(self, room: Room, track: PublishedTrack) -> None:
        """A subscriber's connection now carries `track`. The first time, the publisher is
        told (`TrackSubscribed`, LiveKit's OnTrackEverSubscribed): livekit-agents holds its
        speech until then, so nobody misses the start of it."""
        if track.ever_subscribed or room.published.get(track.info.sid) is not track:
            return
        track.ever_subscribed = True
        track.publisher.send(
            SignalResponse(track_subscribed=TrackSubscribed(track_sid=track.info.sid))
        )
        log.info(
            "track subscribed",
            extra={
                "room": room.name,
                "participant": track.publisher.identity,
                "track_sid": track.info.sid,
            },
        )

    def unpublish_track(self, room: Room, participant: Participant, track_sid: str) -> bool:
        """The participant stopped publishing `track_sid`: subscribers drop it, the others
        hear of it. False when it was not published."""
        if track_sid not in participant.tracks:
            return False
        self._drop_track(room, track_sid)
        participant.tracks.pop(track_sid, None)
        participant.changed()
        log.info(
            "track unpublished",
            extra={"room": room.name, "participant": participant.identity, "track_sid": track_sid},
        )
        self._broadcast(room, participant, skip_source=True)
        return True

    def _drop_track(self, room: Room, track_sid: str) -> None:
        if room.published.pop(track_sid, None) is None:
            return
        for other in room.participants.values():
            if other.media is not None:
                other.media.unsubscribe(track_sid)

    # -- metadata and data -----------------------------------------------------------------

    def update_metadata(
        self, room: Room, participant: Participant, update: UpdateParticipantMetadata
    ) -> None:
        """`update_metadata` from the client: a RequestResponse, then (when allowed) the new
        info to everyone, the sender included."""
        answer = RequestResponse(request_id=update.request_id)
        answer.update_metadata.CopyFrom(update)
        if not participant.grants.video.can_update_own_metadata:
            answer.reason = RequestResponse.Reason.NOT_ALLOWED
            answer.message = "does not have permission to update own metadata"
            participant.send(SignalResponse(request_response=answer))
            log.warning(
                "metadata update refused",
                extra={"room": room.name, "participant": participant.identity},
            )
            return
        if update.name:
            participant.name = update.name
        if update.metadata:
            participant.metadata = update.metadata
        for key, value in update.attributes.items():
            if value:
                participant.attributes[key] = value
            else:
                participant.attributes.pop(key, None)
        participant.changed()
        participant.send(SignalResponse(request_response=answer))
        log.info(
            "participant metadata updated",
            extra={
                "room": room.name,
                "participant": participant.identity,
                "attributes": sorted(update.attributes),
            },
        )
        self._broadcast(room, participant, skip_source=False)

    def route_data(
        self, room: Room, sender: Participant, packet: DataPacket, *, reliable: bool
    ) -> int:
        """Forward a data packet as LiveKit's `handleReceivedDataMessage` does: the sender's
        identity and sid stamped on it, only to `destination_identities` when there are any.
        Returns how many participants it went to."""
        if sender.closed.is_set() or not sender.grants.video.can_publish_data:
            return 0
        if reliable and packet.sequence > 0:
            if packet.sequence <= sender.last_reliable_seq:
                return 0  # a retransmission LiveKit drops as out of order
            sender.last_reliable_seq = packet.sequence
        packet.kind = DataPacket.Kind.RELIABLE if reliable else DataPacket.Kind.LOSSY
        identity = "" if sender.hidden else sender.identity
        sid = "" if sender.hidden else sender.sid
        is_agent = sender.grants.dependent
        override = True
        which = packet.WhichOneof("value")
        if which == "user":
            packet.user.participant_identity = identity
            packet.user.participant_sid = sid
            if packet.destination_identities:
                packet.user.destination_identities[:] = list(packet.destination_identities)
            else:
                packet.destination_identities[:] = list(packet.user.destination_identities)
        elif which in ("transcription",) and not is_agent:
            return 0
        elif which == "metrics":
            return 0  # LiveKit hands metrics to subscribers of metrics, not as data
        elif which in ("chat_message", "stream_header") and is_agent:
            # Agents may publish transcriptions and text streams on behalf of a participant.
            if packet.participant_identity and packet.participant_identity != sender.identity:
                override = False
        if override:
            packet.participant_identity = identity
        packet.participant_sid = sid
        destinations = set(packet.destination_identities)
        destination_sids = set(packet.user.destination_sids) if which == "user" else set()
        payload = packet.SerializeToString()
        delivered = 0
        for other in list(room.participants.values()):
            if other is sender or other.media is None:
                continue
            if (destinations or destination_sids) and not (
                other.identity in destinations or other.sid in destination_sids
            ):
                continue
            other.media.send_data(payload, reliable=reliable)
            delivered += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "data packet routed",
                extra={
                    "room": room.name,
                    "participant": sender.identity,
                    "value": which,
                    "topic": packet.user.topic if which == "user" else "",
                    "delivered": delivered,
                },
            )
        return delivered

    def announce(self, room: Room, participant: Participant) -> None:
        """Tell the others that `participant` changed (a track muted, say)."""
        self._broadcast(room, participant, skip_source=True)

    def _broadcast(self, room: Room, participant: Participant, *, skip_source: bool) -> None:
        info = participant.info()
        update = SignalResponse(update=ParticipantUpdate(participants=[info]))
        if not skip_source:
            participant.send(update)
        if participant.hidden:
            return
        for other in room.participants.values():
            if other is not participant:
                other.send(update)


def _reason(reason: DisconnectReason) -> str:
    return DisconnectReason.Name(reason)
