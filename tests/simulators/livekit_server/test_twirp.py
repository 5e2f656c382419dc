"""The server API through livekit-api's LiveKitAPI (the client the gateway uses), answered from
the rooms the signal connections made."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from livekit import api
from livekit.protocol.models import DisconnectReason

from gateway.dispatch import LiveKitServerApi, dispatch_is_pending
from simulators.livekit_server import LiveKitServer

from .conftest import API_KEY, API_SECRET, SignalClient, admin_token, token


@pytest.fixture
async def lk(server: LiveKitServer) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(server.ws_url, API_KEY, API_SECRET, failover=False) as client:
        yield client


async def test_list_rooms_and_participants_show_real_state(
    server: LiveKitServer, lk: api.LiveKitAPI
) -> None:
    assert (await lk.room.list_rooms(api.ListRoomsRequest())).rooms == []
    async with (
        SignalClient.connect(server, token("ann", room="meeting_s1")) as ann,
        SignalClient.connect(server, token("bob", room="other")) as bob,
    ):
        await ann.next("join")
        await bob.next("join")
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=["meeting_s1"]))
        [room] = rooms.rooms
        assert (room.name, room.num_participants) == ("meeting_s1", 1)
        everyone = await lk.room.list_rooms(api.ListRoomsRequest())
        assert sorted(r.name for r in everyone.rooms) == ["meeting_s1", "other"]
        people = await lk.room.list_participants(api.ListParticipantsRequest(room="meeting_s1"))
        assert [p.identity for p in people.participants] == ["ann"]


async def test_delete_room_tells_the_participants(
    server: LiveKitServer, lk: api.LiveKitAPI
) -> None:
    async with SignalClient.connect(server, token("ann")) as ann:
        await ann.next("join")
        await lk.room.delete_room(api.DeleteRoomRequest(room="room-1"))
        leave = (await ann.next("leave")).leave
        assert leave.reason == DisconnectReason.ROOM_DELETED
        await ann.closed()
    assert (await lk.room.list_rooms(api.ListRoomsRequest())).rooms == []
    with pytest.raises(api.TwirpError) as missing:
        await lk.room.delete_room(api.DeleteRoomRequest(room="room-1"))
    assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_dispatch_methods(server: LiveKitServer, lk: api.LiveKitAPI) -> None:
    with pytest.raises(api.TwirpError) as missing:
        await lk.agent_dispatch.list_dispatch(room_name="nowhere")
    assert missing.value.code == "not_found"
    created = await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name="voice-agent", room="made", metadata="m")
    )
    assert created.id.startswith("AD_") and created.state.created_at > 0
    # CreateDispatch creates the room (auto-create), as LiveKit does; a room created without
    # a configuration gets the unnamed agent's dispatch as well.
    listed = await lk.agent_dispatch.list_dispatch(room_name="made")
    assert sorted((d.agent_name, d.metadata) for d in listed) == [("", ""), ("voice-agent", "m")]
    ours = next(d for d in listed if d.id == created.id)
    # No job yet: LiveKit is assigning one.
    assert dispatch_is_pending(ours, "voice-agent", now_s=time.time(), grace_s=10)
    deleted = await lk.agent_dispatch.delete_dispatch(created.id, "made")
    assert deleted.id == created.id
    assert [d.agent_name for d in await lk.agent_dispatch.list_dispatch(room_name="made")] == [""]


async def test_grants_are_checked_as_livekit_checks_them(server: LiveKitServer) -> None:
    import httpx

    async def call(jwt_text: str | None, method: str, body: str) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if jwt_text is not None:
            headers["Authorization"] = f"Bearer {jwt_text}"
        async with httpx.AsyncClient() as client:
            return await client.post(
                f"{server.url}/twirp/livekit.{method}", content=body, headers=headers
            )

    no_token = await call(None, "RoomService/ListRooms", "{}")
    assert no_token.status_code == 401
    assert no_token.json() == {"code": "unauthenticated", "msg": "permissions denied"}
    bad = await call("x.y.z", "RoomService/ListRooms", "{}")
    assert (bad.status_code, bad.text) == (401, "invalid authorization token")
    joiner = await call(token("ann"), "RoomService/ListRooms", "{}")
    assert joiner.status_code == 401
    other_room = await call(admin_token("a"), "AgentDispatchService/ListDispatch", '{"room": "b"}')
    assert other_room.json()["code"] == "unauthenticated"
    listed = await call(admin_token(), "RoomService/ListRooms", "{}")
    assert listed.status_code == 200 and listed.json() == {}
    unknown = await call(admin_token(), "RoomService/Nope", "{}")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "bad_route")
    garbage = await call(admin_token(), "RoomService/ListRooms", "{not json")
    assert garbage.json()["code"] == "malformed"


async def test_the_gateways_dispatch_check_against_real_state(server: LiveKitServer) -> None:
    """gateway/dispatch.py's outcomes, each from state a real join made (its own tests, in
    tests/gateway/test_dispatch.py, cover agents that come and go)."""
    checker = LiveKitServerApi(
        url=server.ws_url, api_key=API_KEY, api_secret=API_SECRET, agent_name="voice-agent"
    )
    assert await checker.ensure_agent(session_id="s9", user=None) == "no_room"
    async with SignalClient.connect(server, token("page", room="meeting_s9")) as page:
        await page.next("join")
        # The room exists with only the unnamed default dispatch: ours is missing.
        assert await checker.ensure_agent(session_id="s9", user=None) == "created"
        # Ours now waits for a worker (none here): not dispatched twice.
        assert await checker.ensure_agent(session_id="s9", user=None) == "agent_pending"
        room = server.rooms.get("meeting_s9")
        [ours] = [d for d in room.dispatches.values() if d.agent_name == "voice-agent"]
        assert '"session_id":"s9"' in ours.metadata.replace(" ", "")
        assert await checker.probe()
