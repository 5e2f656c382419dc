"""The signal protocol with a raw client: join, ping, metadata, participant updates, leave,
and bad input that ends only the connection that sent it."""

from __future__ import annotations

from livekit.protocol.models import DisconnectReason, ParticipantInfo
from livekit.protocol.rtc import (
    LeaveRequest,
    Ping,
    RequestResponse,
    SignalRequest,
    UpdateParticipantMetadata,
)

from simulators.livekit_server import LiveKitServer

from .conftest import SignalClient, token, wait_until


async def test_join_answers_with_room_participant_and_timings(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("ann")) as ann:
        join = (await ann.next("join")).join
        assert join.room.name == "room-1" and join.room.sid.startswith("RM_")
        assert join.participant.identity == "ann" and join.participant.sid.startswith("PA_")
        assert join.participant.kind == ParticipantInfo.Kind.STANDARD
        assert not join.subscriber_primary  # /rtc/v1: one peer connection, client offers
        assert (join.ping_interval, join.ping_timeout) == (5, 15)
        assert join.server_info.version and join.server_version
        async with SignalClient.connect(server, token("bob")) as bob:
            second = (await bob.next("join")).join
            assert [p.identity for p in second.other_participants] == ["ann"]
            update = await ann.next("update")
            assert [p.identity for p in update.update.participants] == ["bob"]


async def test_the_two_connection_path_says_subscriber_primary(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("ann"), path="/rtc") as ann:
        join = (await ann.next("join")).join
        assert join.subscriber_primary
        offer = await ann.next("offer")  # the server offers on the subscriber connection
        assert "m=application" in offer.offer.sdp  # its _reliable and _lossy channels


async def test_ping_and_ping_req_are_answered(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("ann")) as ann:
        await ann.next("join")
        await ann.send(SignalRequest(ping=123))
        assert (await ann.next("pong")).pong > 1_600_000_000_000  # milliseconds
        await ann.send(SignalRequest(ping_req=Ping(timestamp=42, rtt=7)))
        pong = (await ann.next("pong_resp")).pong_resp
        assert pong.last_ping_timestamp == 42 and pong.timestamp > 0


async def test_update_metadata_answers_and_broadcasts(server: LiveKitServer) -> None:
    async with (
        SignalClient.connect(server, token("agent", can_update_own_metadata=True)) as agent,
        SignalClient.connect(server, token("page")) as page,
    ):
        await agent.next("join")
        await page.next("join")
        update = UpdateParticipantMetadata(attributes={"lk.agent.state": "listening"}, request_id=9)
        await agent.send(SignalRequest(update_metadata=update))
        answer = (await agent.next("request_response")).request_response
        assert (answer.request_id, answer.reason) == (9, RequestResponse.Reason.OK)
        seen = await page.next("update")
        while seen.update.participants[0].identity != "agent":
            seen = await page.next("update")
        assert seen.update.participants[0].attributes["lk.agent.state"] == "listening"
        own = await agent.next("update")  # the sender hears its own new info too
        assert own.update.participants[0].attributes["lk.agent.state"] == "listening"

        await page.send(SignalRequest(update_metadata=UpdateParticipantMetadata(metadata="x")))
        refused = (await page.next("request_response")).request_response
        assert refused.reason == RequestResponse.Reason.NOT_ALLOWED


async def test_leave_removes_the_participant_and_tells_the_others(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("ann")) as ann:
        await ann.next("join")
        async with SignalClient.connect(server, token("bob")) as bob:
            await bob.next("join")
            await bob.send(
                SignalRequest(leave=LeaveRequest(reason=DisconnectReason.CLIENT_INITIATED))
            )
            await bob.closed()
        gone = await ann.next("update")
        while gone.update.participants[0].state != ParticipantInfo.State.DISCONNECTED:
            gone = await ann.next("update")
        assert gone.update.participants[0].identity == "bob"
        assert list(server.rooms.get("room-1").participants) == ["ann"]


async def test_a_second_connection_with_the_same_identity_replaces_the_first(
    server: LiveKitServer,
) -> None:
    async with SignalClient.connect(server, token("ann")) as first:
        await first.next("join")
        async with SignalClient.connect(server, token("ann")) as second:
            await second.next("join")
            leave = (await first.next("leave")).leave
            assert leave.reason == DisconnectReason.DUPLICATE_IDENTITY
            await first.closed()
            room = server.rooms.get("room-1")
            assert room.participants["ann"].sid == (await _sid(second))


async def _sid(client: SignalClient) -> str:
    return next(r.join.participant.sid for r in client.received if r.HasField("join"))


async def test_garbage_ends_only_the_connection_that_sent_it(server: LiveKitServer) -> None:
    async with (
        SignalClient.connect(server, token("ann")) as ann,
        SignalClient.connect(server, token("bob")) as bob,
    ):
        await ann.next("join")
        await bob.next("join")
        await bob.ws.send(b"\xff\xff\xff not a protobuf")
        await bob.closed()
        await wait_until(lambda: "bob" not in server.rooms.get("room-1").participants)
        # ann and the server carry on.
        await ann.send(SignalRequest(ping=1))
        assert (await ann.next("pong")).pong > 0
        await ann.ws.send('{"not": "a signal request"}')  # JSON that is no SignalRequest
        await ann.closed()
        async with SignalClient.connect(server, token("cid")) as cid:
            assert (await cid.next("join")).join.participant.identity == "cid"


async def test_an_unknown_or_empty_message_is_ignored(server: LiveKitServer) -> None:
    async with SignalClient.connect(server, token("ann")) as ann:
        await ann.next("join")
        await ann.send(SignalRequest())  # no message set: what an unknown oneof decodes to
        await ann.ws.send(b"\xa2\x06\x02\x08\x01")  # field 100: unknown to this protocol
        await ann.send(SignalRequest(ping=5))
        assert (await ann.next("pong")).pong > 0


async def test_json_frames_are_answered_in_json(server: LiveKitServer) -> None:
    import json

    async with SignalClient.connect(server, token("ann")) as ann:
        await ann.next("join")
        await ann.ws.send(json.dumps({"pingReq": {"timestamp": "77"}}))
        answer = json.loads(await ann.ws.recv())
        assert answer["pongResp"]["lastPingTimestamp"] == "77"


async def test_a_resume_attempt_is_told_to_rejoin(server: LiveKitServer) -> None:
    from livekit.protocol.rtc import JoinRequest
    from websockets.asyncio.client import connect

    from .conftest import join_query

    query = join_query(JoinRequest(reconnect=True, participant_sid="PA_gone"))
    async with connect(
        f"{server.ws_url}/rtc/v1?join_request={query}&access_token={token('ann')}"
    ) as ws:
        client = SignalClient(ws)
        leave = (await client.next("leave")).leave
    assert leave.action == LeaveRequest.Action.RECONNECT
    assert leave.reason == DisconnectReason.STATE_MISMATCH
