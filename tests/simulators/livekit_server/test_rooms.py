"""Room lifetime and data routing: created by the first join, configured only then, closed by
its timeouts or DeleteRoom with the reason sent to whoever is still in it; data packets stamped
with the sender and routed to their destinations."""

from __future__ import annotations

import time

from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.models import DataPacket, DisconnectReason, UserPacket
from livekit.protocol.room import RoomConfiguration

from simulators.livekit_server import LiveKitServer
from simulators.livekit_server.auth import KeyRing
from simulators.livekit_server.rooms import Participant, PublishedTrack, RoomManager

from .conftest import KEYS, SignalClient, token, wait_until

QUICK = RoomConfiguration(empty_timeout=1, departure_timeout=1)


async def test_the_first_join_configures_the_room_and_later_ones_do_not(
    server: LiveKitServer,
) -> None:
    first = RoomConfiguration(
        departure_timeout=7,
        metadata="first",
        agents=[RoomAgentDispatch(agent_name="voice-agent", metadata='{"session_id": "s1"}')],
    )
    later = RoomConfiguration(
        departure_timeout=99, agents=[RoomAgentDispatch(agent_name="voice-agent")]
    )
    async with SignalClient.connect(server, token("page", config=first)) as page:
        join = (await page.next("join")).join
        assert (join.room.departure_timeout, join.room.metadata) == (7, "first")
        room = server.rooms.get("room-1")
        [dispatch] = room.dispatches.values()
        assert (dispatch.agent_name, dispatch.metadata) == ("voice-agent", '{"session_id": "s1"}')
        async with SignalClient.connect(server, token("page-2", config=later)) as second:
            await second.next("join")
            assert room.proto.departure_timeout == 7
            assert [d.metadata for d in room.dispatches.values()] == ['{"session_id": "s1"}']


async def test_no_agents_listed_dispatches_the_unnamed_agent(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("page")) as page:
        await page.next("join")
        [dispatch] = server.rooms.get("room-1").dispatches.values()
        assert dispatch.agent_name == ""


async def test_departure_timeout_closes_a_room_whose_people_left(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("page", config=QUICK)) as page:
        await page.next("join")
        async with SignalClient.connect(server, token("agent", kind="agent")) as agent:
            await agent.next("join")
            await page.ws.close()
            left_at = time.monotonic()
            # An agent alone does not keep the room: it is told the room closed.
            leave = (await agent.next("leave", within=5)).leave
            closed_after = time.monotonic() - left_at
            assert leave.reason == DisconnectReason.ROOM_CLOSED
            assert leave.action == leave.Action.DISCONNECT
            await agent.closed()
    assert "room-1" not in server.rooms.rooms
    assert 0.9 <= closed_after < 3.0


async def test_empty_timeout_closes_a_room_nobody_joined(server: LiveKitServer) -> None:
    room, created = server.rooms.get_or_create("idle", RoomConfiguration(empty_timeout=1))
    assert created
    started = time.monotonic()
    await wait_until(lambda: "idle" not in server.rooms.rooms, within=5)
    assert time.monotonic() - started >= 0.9 and room.closed


async def test_a_room_with_someone_in_it_stays_open(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("page", config=QUICK)) as page:
        await page.next("join")
        room = server.rooms.get("room-1")
        room.proto.creation_time_ms -= 10_000  # well past its empty timeout
        await server.rooms.close_idle_rooms()
        assert not room.closed


# -- data routing (the room's rule, with recording media links) ------------------------------


class Recorder:
    def __init__(self) -> None:
        self.packets: list[DataPacket] = []

    def subscribe(self, track: PublishedTrack) -> None: ...

    def unsubscribe(self, track_sid: str) -> None: ...

    def send_data(self, packet: bytes, *, reliable: bool) -> None:
        self.packets.append(DataPacket.FromString(packet))

    async def close(self) -> None: ...


async def _room_of(
    *identities: str, **grants: object
) -> tuple[RoomManager, dict[str, Participant]]:
    rooms = RoomManager()
    room, _ = rooms.get_or_create("r")
    keys = KeyRing(KEYS)
    people = {}
    for identity in identities:
        participant = Participant(
            identity=identity,
            grants=keys.verify(token(identity, room="r")),
            single_pc=True,
        )
        participant.media = Recorder()
        await rooms.join(room, participant)
        people[identity] = participant
    return rooms, people


def _received(participant: Participant) -> list[DataPacket]:
    assert isinstance(participant.media, Recorder)
    return participant.media.packets


async def test_data_reaches_everyone_else_stamped_with_the_sender() -> None:
    rooms, people = await _room_of("agent", "page", "observer")
    packet = DataPacket(
        participant_identity="someone-else",  # a client cannot claim another identity
        user=UserPacket(payload=b'{"type": "agent.state"}', topic="voice.state"),
    )
    delivered = rooms.route_data(rooms.get("r"), people["agent"], packet, reliable=True)
    assert delivered == 2 and _received(people["agent"]) == []
    for name in ("page", "observer"):
        [got] = _received(people[name])
        assert got.participant_identity == "agent"
        assert got.participant_sid == people["agent"].sid
        assert got.user.participant_identity == "agent"
        assert got.user.topic == "voice.state"
        assert got.user.payload == b'{"type": "agent.state"}'
        assert got.kind == DataPacket.Kind.RELIABLE


async def test_data_with_destinations_reaches_only_them() -> None:
    rooms, people = await _room_of("agent", "page", "observer")
    room = rooms.get("r")
    to_page = DataPacket(destination_identities=["page"], user=UserPacket(payload=b"1"))
    assert rooms.route_data(room, people["agent"], to_page, reliable=True) == 1
    legacy = DataPacket(user=UserPacket(payload=b"2", destination_identities=["observer"]))
    assert rooms.route_data(room, people["agent"], legacy, reliable=False) == 1
    assert [p.user.payload for p in _received(people["page"])] == [b"1"]
    [got] = _received(people["observer"])
    assert got.user.payload == b"2" and got.kind == DataPacket.Kind.LOSSY
    assert list(got.destination_identities) == ["observer"]
    nobody = DataPacket(destination_identities=["ghost"], user=UserPacket(payload=b"3"))
    assert rooms.route_data(room, people["agent"], nobody, reliable=True) == 0


async def test_reliable_retransmissions_are_dropped_and_metrics_not_forwarded() -> None:
    rooms, people = await _room_of("agent", "page")
    room = rooms.get("r")
    first = DataPacket(sequence=5, user=UserPacket(payload=b"a"))
    again = DataPacket(sequence=5, user=UserPacket(payload=b"a"))
    assert rooms.route_data(room, people["agent"], first, reliable=True) == 1
    assert rooms.route_data(room, people["agent"], again, reliable=True) == 0
    metrics = DataPacket()
    metrics.metrics.SetInParent()
    assert rooms.route_data(room, people["agent"], metrics, reliable=True) == 0
    transcription = DataPacket()
    transcription.transcription.SetInParent()
    assert rooms.route_data(room, people["page"], transcription, reliable=True) == 0
