"""LiveKit server API simulator: the Twirp services livekit-api's LiveKitAPI calls.

It speaks Twirp as LiveKit does: `POST /twirp/livekit.<Service>/<Method>` with a protobuf body
(`application/protobuf`; `application/json` in protobuf's JSON mapping is accepted too), a
protobuf answer, and errors as JSON `{"code", "msg"}`. Every request must carry
`Authorization: Bearer <jwt>` signed HS256 with the API secret, issued by the API key, with the
grant the method needs (`roomList` for ListRooms; `roomAdmin` for the room in question for the
dispatch methods), so a client bug fails the test.

Implemented: RoomService/ListRooms, AgentDispatchService/ListDispatch and CreateDispatch. A test
sets up rooms and dispatches (`add_room`, `add_dispatch`), makes the server fail (`down`), and
reads what arrived (`calls`, `rejected`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol.agent import Job, JobState, JobStatus
from livekit.protocol.agent_dispatch import (
    AgentDispatch,
    AgentDispatchState,
    CreateAgentDispatchRequest,
    ListAgentDispatchRequest,
    ListAgentDispatchResponse,
)
from livekit.protocol.models import Room
from livekit.protocol.room import ListRoomsRequest, ListRoomsResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_Handler = Callable[[Message, dict[str, Any]], Awaitable[Message]]


class TwirpFailure(Exception):
    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass(frozen=True)
class Call:
    method: str
    request: Message


@dataclass
class LiveKitApiSimulator:
    """The ASGI app is `self.app`; serve it with `simulators.server.serve`."""

    api_key: str = "devkey"
    api_secret: str = "secret"
    down: bool = False  # answer every request with 503, as an unavailable server does
    rooms: dict[str, Room] = field(default_factory=dict)
    dispatches: dict[str, list[AgentDispatch]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._methods: dict[tuple[str, str], tuple[type[Message], _Handler]] = {
            ("RoomService", "ListRooms"): (ListRoomsRequest, self._list_rooms),
            ("AgentDispatchService", "ListDispatch"): (
                ListAgentDispatchRequest,
                self._list_dispatch,
            ),
            ("AgentDispatchService", "CreateDispatch"): (
                CreateAgentDispatchRequest,
                self._create_dispatch,
            ),
        }
        self.app = Starlette(
            routes=[Route("/twirp/livekit.{service}/{method}", self._handle, methods=["POST"])]
        )

    # -- scripting -------------------------------------------------------------------------

    def add_room(self, name: str) -> Room:
        room = Room(sid=f"RM_{uuid.uuid4().hex[:12]}", name=name, creation_time=int(time.time()))
        self.rooms[name] = room
        return room

    def add_dispatch(
        self, room: str, agent_name: str, *, job_status: JobStatus | None
    ) -> AgentDispatch:
        """A dispatch in `room`; `job_status` None means no job has been assigned yet."""
        jobs = []
        if job_status is not None:
            jobs.append(
                Job(
                    id=f"AJ_{uuid.uuid4().hex[:12]}",
                    room=self.rooms[room] if room in self.rooms else None,
                    agent_name=agent_name,
                    state=JobState(status=job_status),
                )
            )
        dispatch = AgentDispatch(
            id=f"AD_{uuid.uuid4().hex[:12]}",
            agent_name=agent_name,
            room=room,
            state=AgentDispatchState(jobs=jobs, created_at=time.time_ns()),
        )
        self.dispatches.setdefault(room, []).append(dispatch)
        return dispatch

    def created(self) -> list[CreateAgentDispatchRequest]:
        return [c.request for c in self.calls if isinstance(c.request, CreateAgentDispatchRequest)]

    # -- protocol --------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        service, method = request.path_params["service"], request.path_params["method"]
        entry = self._methods.get((service, method))
        if entry is None:
            return self._error(404, "bad_route", f"no handler for livekit.{service}/{method}")
        if self.down:
            return self._error(503, "unavailable", "the server is unavailable")
        request_type, handler = entry
        try:
            claims = self._authenticate(request)
            message = await _decode(request, request_type)
            self.calls.append(Call(method, message))
            answer = await handler(message, claims)
        except TwirpFailure as exc:
            return self._error(exc.status, exc.code, exc.msg)
        if request.headers.get("content-type", "").startswith("application/json"):
            return Response(json_format.MessageToJson(answer), media_type="application/json")
        return Response(answer.SerializeToString(), media_type="application/protobuf")

    def _authenticate(self, request: Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            raise TwirpFailure(401, "unauthenticated", "authorization header must be Bearer")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.api_secret, algorithms=["HS256"], options={"require": ["exp", "iss"]}
            )
        except jwt.InvalidTokenError:
            raise TwirpFailure(401, "unauthenticated", "invalid access token") from None
        if claims.get("iss") != self.api_key:
            raise TwirpFailure(401, "unauthenticated", "unknown API key")
        return claims

    def _error(self, status: int, code: str, msg: str) -> Response:
        self.rejected.append(f"{code}: {msg}")
        return JSONResponse({"code": code, "msg": msg}, status_code=status)

    # -- services --------------------------------------------------------------------------

    async def _list_rooms(self, message: Message, claims: dict[str, Any]) -> Message:
        assert isinstance(message, ListRoomsRequest)
        _require_grant(claims, "roomList")
        names = set(message.names)
        rooms = [r for n, r in self.rooms.items() if not names or n in names]
        return ListRoomsResponse(rooms=rooms)

    async def _list_dispatch(self, message: Message, claims: dict[str, Any]) -> Message:
        assert isinstance(message, ListAgentDispatchRequest)
        _require_room_admin(claims, message.room)
        found = self.dispatches.get(message.room, [])
        if message.dispatch_id:
            found = [d for d in found if d.id == message.dispatch_id]
        return ListAgentDispatchResponse(agent_dispatches=found)

    async def _create_dispatch(self, message: Message, claims: dict[str, Any]) -> Message:
        assert isinstance(message, CreateAgentDispatchRequest)
        _require_room_admin(claims, message.room)
        if not message.agent_name:
            raise TwirpFailure(400, "invalid_argument", "agent_name is required")
        dispatch = AgentDispatch(
            id=f"AD_{uuid.uuid4().hex[:12]}",
            agent_name=message.agent_name,
            room=message.room,
            metadata=message.metadata,
            state=AgentDispatchState(created_at=time.time_ns()),
        )
        self.dispatches.setdefault(message.room, []).append(dispatch)
        return dispatch


async def _decode(request: Request, request_type: type[Message]) -> Message:
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    message = request_type()
    try:
        if content_type == "application/protobuf":
            message.ParseFromString(body)
        elif content_type == "application/json":
            json_format.Parse(body or b"{}", message)
        else:
            raise TwirpFailure(
                400, "malformed", "content-type must be application/protobuf or application/json"
            )
    except (DecodeError, json_format.ParseError):
        raise TwirpFailure(400, "malformed", "the body does not decode as the request") from None
    return message


def _require_grant(claims: dict[str, Any], grant: str) -> None:
    video = claims.get("video")
    if not isinstance(video, dict) or video.get(grant) is not True:
        raise TwirpFailure(403, "permission_denied", f"the token lacks the {grant} grant")


def _require_room_admin(claims: dict[str, Any], room: str) -> None:
    _require_grant(claims, "roomAdmin")
    if not room:
        raise TwirpFailure(400, "invalid_argument", "room is required")
    if claims["video"].get("room") != room:
        raise TwirpFailure(
            403, "permission_denied", "the token's roomAdmin grant is for another room"
        )
