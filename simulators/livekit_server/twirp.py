"""The server API over Twirp, answered from the real room state (livekit
`pkg/service/roomservice.go`, `agent_dispatch_service.go`, `auth.go`).

`POST /twirp/livekit.<Service>/<Method>` with a protobuf (or protobuf-JSON) body, answered in
kind; errors are Twirp JSON `{"code", "msg"}` with Twirp's HTTP status. Authentication happens
before Twirp as in LiveKit: a malformed header or a token that does not verify gets a plain-text
401 from the auth layer; a request without the grant its method needs gets Twirp
`unauthenticated` "permissions denied" (LiveKit's `twirpAuthError`). Grants: roomCreate for
CreateRoom and DeleteRoom, roomList for ListRooms, roomAdmin for the room in question for the
participant and dispatch methods.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol.agent_dispatch import (
    AgentDispatch,
    CreateAgentDispatchRequest,
    DeleteAgentDispatchRequest,
    ListAgentDispatchRequest,
    ListAgentDispatchResponse,
)
from livekit.protocol.models import DataPacket, DisconnectReason, UserPacket
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    DeleteRoomResponse,
    ListParticipantsRequest,
    ListParticipantsResponse,
    ListRoomsRequest,
    ListRoomsResponse,
    RemoveParticipantResponse,
    RoomConfiguration,
    RoomParticipantIdentity,
    SendDataRequest,
    SendDataResponse,
)
from livekit.protocol.rtc import LeaveRequest, SignalResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .auth import PERMISSION_DENIED, AuthError, Grants, KeyRing, bearer_token
from .rooms import Participant, RoomError, RoomManager

log = logging.getLogger("livekit_server.twirp")

_STATUS = {
    "invalid_argument": 400,
    "malformed": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "resource_exhausted": 429,
    "internal": 500,
    "unavailable": 503,
}


class TwirpError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


_Handler = Callable[[Message, Grants | None], Awaitable[Message]]


@dataclass(frozen=True)
class Call:
    """A request that reached a method (for tests that check what a client asked)."""

    method: str
    request: Message


class TwirpService:
    """RoomService and AgentDispatchService over `rooms`."""

    def __init__(self, keys: KeyRing, rooms: RoomManager, *, auto_create: bool = True) -> None:
        self._keys = keys
        self._rooms = rooms
        self._auto_create = auto_create
        self.calls: list[Call] = []
        self._methods: dict[tuple[str, str], tuple[type[Message], _Handler]] = {
            ("RoomService", "CreateRoom"): (CreateRoomRequest, self._create_room),
            ("RoomService", "ListRooms"): (ListRoomsRequest, self._list_rooms),
            ("RoomService", "DeleteRoom"): (DeleteRoomRequest, self._delete_room),
            ("RoomService", "ListParticipants"): (ListParticipantsRequest, self._participants),
            ("RoomService", "GetParticipant"): (RoomParticipantIdentity, self._get_participant),
            ("RoomService", "RemoveParticipant"): (RoomParticipantIdentity, self._remove),
            ("RoomService", "SendData"): (SendDataRequest, self._send_data),
            ("AgentDispatchService", "CreateDispatch"): (
                CreateAgentDispatchRequest,
                self._create_dispatch,
            ),
            ("AgentDispatchService", "ListDispatch"): (
                ListAgentDispatchRequest,
                self._list_dispatch,
            ),
            ("AgentDispatchService", "DeleteDispatch"): (
                DeleteAgentDispatchRequest,
                self._delete_dispatch,
            ),
        }

    def routes(self) -> list[Route]:
        return [Route("/twirp/livekit.{service}/{method}", self._handle, methods=["POST"])]

    async def _handle(self, request: Request) -> Response:
        service, method = request.path_params["service"], request.path_params["method"]
        try:
            token = bearer_token(request.headers, request.query_params)
            grants = self._keys.verify(token) if token else None
        except AuthError as exc:
            log.warning("api request refused", extra={"method": method, "error": exc.message})
            return PlainTextResponse(exc.message, status_code=exc.status)
        try:
            entry = self._methods.get((service, method))
            if entry is None:
                path = f"/twirp/livekit.{service}/{method}"
                raise TwirpError("bad_route", f"no handler for path {path}")
            request_type, handler = entry
            message, as_json = await _decode(request, request_type)
            self.calls.append(Call(method, message))
            answer = await handler(message, grants)
        except TwirpError as exc:
            log.warning(
                "api request failed", extra={"method": method, "code": exc.code, "error": exc.msg}
            )
            return JSONResponse({"code": exc.code, "msg": exc.msg}, status_code=_STATUS[exc.code])
        except RoomError as exc:
            fields = {"method": method, "code": exc.code, "error": exc.message}
            log.warning("api request failed", extra=fields)
            return JSONResponse(
                {"code": exc.code, "msg": exc.message}, status_code=_STATUS.get(exc.code, 500)
            )
        log.info("api request", extra={"method": method})
        if as_json:
            return Response(json_format.MessageToJson(answer), media_type="application/json")
        return Response(answer.SerializeToString(), media_type="application/protobuf")

    # -- RoomService -----------------------------------------------------------------------

    async def _create_room(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, CreateRoomRequest)
        _require(grants, "room_create")
        if not message.name:
            raise TwirpError("invalid_argument", "no room name")
        config = RoomConfiguration(
            empty_timeout=message.empty_timeout,
            departure_timeout=message.departure_timeout,
            max_participants=message.max_participants,
            metadata=message.metadata,
            agents=list(message.agents),
        )
        room, _ = self._rooms.get_or_create(message.name, config)
        return room.to_proto()

    async def _list_rooms(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, ListRoomsRequest)
        _require(grants, "room_list")
        names = set(message.names)
        rooms = [r.to_proto() for n, r in self._rooms.rooms.items() if not names or n in names]
        return ListRoomsResponse(rooms=rooms)

    async def _delete_room(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, DeleteRoomRequest)
        _require(grants, "room_create")
        room = self._rooms.get(message.room)
        await self._rooms.close_room(room, DisconnectReason.ROOM_DELETED)
        return DeleteRoomResponse()

    async def _participants(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, ListParticipantsRequest)
        _require_admin(grants, message.room)
        room = self._rooms.get(message.room)
        return ListParticipantsResponse(participants=[p.info() for p in room.participants.values()])

    async def _get_participant(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, RoomParticipantIdentity)
        _require_admin(grants, message.room)
        return self._participant(message).info()

    async def _remove(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, RoomParticipantIdentity)
        _require_admin(grants, message.room)
        participant = self._participant(message)
        room = self._rooms.get(message.room)
        # As LiveKit does: told to leave for good first, or its SDK takes the closed socket for
        # a network drop and joins again with the same token (the participant comes back).
        participant.send(
            SignalResponse(
                leave=LeaveRequest(
                    reason=DisconnectReason.PARTICIPANT_REMOVED,
                    action=LeaveRequest.Action.DISCONNECT,
                    can_reconnect=False,
                )
            )
        )
        await self._rooms.remove(room, participant, DisconnectReason.PARTICIPANT_REMOVED)
        return RemoveParticipantResponse()

    def _participant(self, message: RoomParticipantIdentity) -> Participant:
        participant = self._rooms.get(message.room).participants.get(message.identity)
        if participant is None:
            raise TwirpError("not_found", "participant does not exist")
        return participant

    async def _send_data(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, SendDataRequest)
        _require_admin(grants, message.room)
        room = self._rooms.get(message.room)
        packet = DataPacket(
            kind=message.kind,
            destination_identities=list(message.destination_identities),
            user=UserPacket(
                payload=message.data,
                destination_sids=list(message.destination_sids),
                destination_identities=list(message.destination_identities),
                topic=message.topic,
                nonce=message.nonce,
            ),
        )
        payload = packet.SerializeToString()
        destinations = set(message.destination_identities)
        for participant in room.participants.values():
            if participant.media is not None and (
                not destinations or participant.identity in destinations
            ):
                participant.media.send_data(
                    payload, reliable=message.kind == DataPacket.Kind.RELIABLE
                )
        return SendDataResponse()

    # -- AgentDispatchService --------------------------------------------------------------

    async def _create_dispatch(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, CreateAgentDispatchRequest)
        _require_admin(grants, message.room)
        if self._auto_create:
            room, _ = self._rooms.get_or_create(message.room)
        else:
            room = self._rooms.get(message.room)
        dispatch: AgentDispatch = self._rooms.add_dispatch(
            room, message.agent_name, message.metadata
        )
        return dispatch

    async def _list_dispatch(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, ListAgentDispatchRequest)
        _require_admin(grants, message.room)
        room = self._rooms.get(message.room)
        found = [
            d
            for d in room.dispatches.values()
            if not message.dispatch_id or d.id == message.dispatch_id
        ]
        return ListAgentDispatchResponse(agent_dispatches=found)

    async def _delete_dispatch(self, message: Message, grants: Grants | None) -> Message:
        assert isinstance(message, DeleteAgentDispatchRequest)
        _require_admin(grants, message.room)
        room = self._rooms.get(message.room)
        return self._rooms.delete_dispatch(room, message.dispatch_id)


def _require(grants: Grants | None, grant: str) -> None:
    if grants is None or not grants.has_video or not getattr(grants.video, grant):
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


def _require_admin(grants: Grants | None, room: str) -> None:
    _require(grants, "room_admin")
    assert grants is not None
    if grants.video.room != room:
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


async def _decode(request: Request, request_type: type[Message]) -> tuple[Message, bool]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    body = await request.body()
    message = request_type()
    try:
        if content_type == "application/protobuf":
            message.ParseFromString(body)
            return message, False
        if content_type == "application/json":
            json_format.Parse(body or b"{}", message)
            return message, True
    except (DecodeError, json_format.ParseError):
        raise TwirpError("malformed", "the request body could not be decoded") from None
    raise TwirpError("bad_route", f"unexpected Content-Type: {content_type!r}")
