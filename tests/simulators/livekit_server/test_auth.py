"""Tokens are verified as LiveKit verifies them, at `validate` and on the signal socket, with
LiveKit's status codes and texts."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import httpx
import jwt
import pytest
from livekit.protocol.rtc import SignalRequest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from simulators.livekit_server import LiveKitServer
from simulators.livekit_server.auth import KeyRing

from .conftest import API_KEY, API_SECRET, SignalClient, join_query, token

EXPIRED = datetime.timedelta(minutes=-5)


def raw_token(**claims: object) -> str:
    """A token livekit-api would refuse to mint (no identity, no room, no exp...)."""
    base = {
        "iss": API_KEY,
        "sub": "ann",
        "exp": int(time.time()) + 600,
        "video": {"roomJoin": True, "room": "room-1"},
    }
    return jwt.encode({k: v for k, v in {**base, **claims}.items() if v is not None}, API_SECRET)


async def validate(server: LiveKitServer, jwt_text: str, path: str = "/rtc/v1") -> httpx.Response:
    query = {"access_token": jwt_text}
    if path == "/rtc/v1":
        query["join_request"] = join_query()
    async with httpx.AsyncClient() as client:
        return await client.get(f"{server.url}{path}/validate", params=query)


# Tokens are minted when the test runs: minted at collection, a long suite outlives their TTL.
@pytest.mark.parametrize(
    ("mint", "status", "text"),
    [
        (lambda: token("ann"), 200, "success"),
        (
            lambda: token("ann", ttl=EXPIRED),
            401,
            "invalid authorization token: token is expired (exp)",
        ),
        (
            lambda: token("ann", secret="another-secret-of-enough-length-000"),
            401,
            "signature is invalid",
        ),
        (lambda: token("ann", key="APIunknown"), 401, "invalid API key"),
        (lambda: "not-a-jwt", 401, "invalid authorization token"),
        (lambda: token("ann", room_join=False), 401, "no permissions to access the room"),
        (lambda: raw_token(sub=""), 400, "identity cannot be empty"),
        (lambda: raw_token(video={"roomJoin": True}), 400, "no room name"),
    ],
    ids=[
        "valid",
        "expired",
        "wrong-secret",
        "unknown-key",
        "garbage",
        "no-roomjoin",
        "no-identity",
        "no-room",
    ],
)
async def test_validate_answers_as_livekit(
    server: LiveKitServer, mint: Callable[[], str], status: int, text: str
) -> None:
    jwt_text = mint()
    for path in ("/rtc/v1", "/rtc"):
        answer = await validate(server, jwt_text, path)
        assert answer.status_code == status, (path, answer.text)
        assert text in answer.text
        assert answer.headers["access-control-allow-origin"] == "*"


async def test_exp_is_required_and_nbf_is_honoured(server: LiveKitServer) -> None:
    no_exp = await validate(server, raw_token(exp=None))
    assert no_exp.status_code == 401
    later = await validate(server, raw_token(nbf=int(time.time()) + 300))
    assert (later.status_code, later.text) == (
        401,
        "invalid authorization token: token not valid yet (nbf)",
    )
    refused = await validate(server, raw_token(video=None))
    assert (refused.status_code, refused.text) == (401, "no permissions to access the room")


async def test_v1_needs_a_decodable_join_request(server: LiveKitServer) -> None:
    async with httpx.AsyncClient() as client:
        base = f"{server.url}/rtc/v1/validate"
        missing = await client.get(base, params={"access_token": token("ann")})
        broken = await client.get(
            base, params={"access_token": token("ann"), "join_request": "AAAA!!"}
        )
        header = await client.get(
            base,
            params={"join_request": join_query()},
            headers={"Authorization": f"Bearer {token('ann')}"},
        )
        not_bearer = await client.get(
            base, params={"join_request": join_query()}, headers={"Authorization": "Basic x"}
        )
    assert (missing.status_code, missing.text) == (400, "join_request is required")
    assert broken.status_code == 400
    assert (header.status_code, header.text) == (200, "success")
    assert not_bearer.status_code == 401


async def test_the_socket_refuses_before_the_upgrade(server: LiveKitServer) -> None:
    for jwt_text, status in ((token("ann", ttl=EXPIRED), 401), (raw_token(sub=""), 400)):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"{server.ws_url}/rtc/v1?join_request={join_query()}&access_token={jwt_text}"
            ):
                pass
        assert refused.value.response.status_code == status
    # A plain GET (no upgrade) of the signal path is 404, which the JS client reads as "no
    # /rtc/v1 here" before it calls validate.
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{server.url}/rtc/v1")).status_code == 404
    assert server.rooms.rooms == {}


async def test_metadata_in_the_join_request_needs_the_grant(server: LiveKitServer) -> None:
    from livekit.protocol.rtc import JoinRequest

    query = {"access_token": token("ann"), "join_request": join_query(JoinRequest(metadata="m"))}
    allowed = {
        "access_token": token("ann", can_update_own_metadata=True),
        "join_request": join_query(JoinRequest(metadata="m")),
    }
    async with httpx.AsyncClient() as client:
        refused = await client.get(f"{server.url}/rtc/v1/validate", params=query)
        accepted = await client.get(f"{server.url}/rtc/v1/validate", params=allowed)
    assert refused.status_code == 401
    assert accepted.status_code == 200


async def test_publish_and_data_grants_are_enforced(server: LiveKitServer) -> None:
    from livekit.protocol.models import DataPacket, TrackType, UserPacket
    from livekit.protocol.rtc import AddTrackRequest, RequestResponse

    async with SignalClient.connect(server, token("viewer", can_publish=False)) as viewer:
        join = await viewer.next("join")
        assert not join.join.participant.permission.can_publish
        await viewer.send(SignalRequest(add_track=AddTrackRequest(cid="mic", type=TrackType.AUDIO)))
        answer = await viewer.next("request_response")
        assert answer.request_response.reason == RequestResponse.Reason.NOT_ALLOWED
    # canPublishData=false: the room drops the packet (nobody receives it).
    room, _ = server.rooms.get_or_create("room-2")
    from simulators.livekit_server.rooms import Participant

    muted = Participant(
        identity="quiet",
        grants=KeyRing({API_KEY: API_SECRET}).verify(
            token("quiet", room="room-2", can_publish_data=False)
        ),
        single_pc=True,
    )
    packet = DataPacket(user=UserPacket(payload=b"x"))
    assert server.rooms.route_data(room, muted, packet, reliable=True) == 0
