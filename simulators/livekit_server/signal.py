"""The signal service: `/rtc/v1` (single peer connection), `/rtc` (two), and their `validate`
endpoints (livekit `pkg/service/rtcservice.go`, `wsprotocol.go`, `pkg/rtc/signalling`).

A connection is validated before the WebSocket upgrade, with the status and text LiveKit sends:
401 for a missing, bad or expired token or one without roomJoin, 400 for a join request that
does not decode or a token without identity or room, 404 for a room that does not exist when
rooms are not created on join. `validate` answers the same checks with `success`; the JS client
calls it after a failed upgrade (404 means "fall back to /rtc").

After the upgrade the server sends JoinResponse, then serves SignalRequests. Binary frames are
protobuf, text frames protojson (answered in kind). A frame that does not decode ends that
connection (LiveKit logs "error reading from websocket" and returns); a message it does not
know is ignored. Neither touches another participant or the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import io
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol.models import DisconnectReason
from livekit.protocol.rtc import (
    JoinRequest,
    LeaveRequest,
    Pong,
    RequestResponse,
    SignalRequest,
    SignalResponse,
    TrackPublishedResponse,
    WrappedJoinRequest,
)
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .auth import AuthError, Grants, KeyRing, bearer_token
from .rooms import Participant, Room, RoomError, RoomManager

log = logging.getLogger("livekit_server.signal")

NO_PERMISSION = "no permissions to access the room"
_MAX_JOIN_REQUEST = 1 << 20  # http.DefaultMaxHeaderBytes


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class JoinParams:
    """What a validated connection asks for."""

    room: str
    grants: Grants
    single_pc: bool
    join: JoinRequest
    auto_subscribe: bool
    reconnect: bool


def _check(
    keys: KeyRing,
    connection: HTTPConnection,
    *,
    single_pc: bool,
    rooms: RoomManager,
    auto_create: bool,
) -> JoinParams:
    """LiveKit's validateInternal + ValidateConnectRequest."""
    try:
        token = bearer_token(connection.headers, connection.query_params)
        if token is None:
            raise Refused(401, NO_PERMISSION)
        grants = keys.verify(token)
    except AuthError as exc:
        raise Refused(exc.status, exc.message) from None
    if not grants.has_video:
        raise Refused(401, NO_PERMISSION)
    join = JoinRequest()
    wrapped_text = connection.query_params.get("join_request", "")
    if wrapped_text:
        join = _decode_join_request(wrapped_text)
    elif single_pc:
        raise Refused(400, "join_request is required")
    video = grants.video
    if not video.room_join:
        raise Refused(401, NO_PERMISSION)
    if not grants.claims.identity:
        raise Refused(400, "identity cannot be empty")
    if not video.room:
        raise Refused(400, "no room name")
    if (join.metadata or join.participant_attributes) and not video.can_update_own_metadata:
        raise Refused(401, NO_PERMISSION)
    if not auto_create and not video.room_create and video.room not in rooms.rooms:
        raise Refused(404, "requested room does not exist")
    if single_pc:
        auto_subscribe = join.connection_settings.auto_subscribe
        reconnect = join.reconnect
    else:
        query = connection.query_params
        auto_subscribe = query.get("auto_subscribe", "1") in ("1", "true")
        reconnect = query.get("reconnect", "") in ("1", "true")
    return JoinParams(
        room=video.room,
        grants=grants,
        single_pc=single_pc,
        join=join,
        auto_subscribe=auto_subscribe,
        reconnect=reconnect,
    )


def _decode_join_request(text: str) -> JoinRequest:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise Refused(400, "cannot base64 decode wrapped join request") from None
    wrapped = WrappedJoinRequest()
    try:
        wrapped.ParseFromString(raw)
    except DecodeError:
        raise Refused(400, "cannot unmarshal wrapped join request") from None
    body = wrapped.join_request
    if wrapped.compression == WrappedJoinRequest.Compression.GZIP:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped:
                body = unzipped.read(_MAX_JOIN_REQUEST + 1)
        except (OSError, EOFError):
            raise Refused(400, "cannot read decompressed join request") from None
    if len(body) > _MAX_JOIN_REQUEST:
        raise Refused(400, "join request too large")
    join = JoinRequest()
    try:
        join.ParseFromString(body)
    except DecodeError:
        raise Refused(400, "cannot unmarshal join request") from None
    return join


class _Codec:
    """LiveKit answers in the encoding the client last used."""

    json = False

    def decode(self, frame: Mapping[str, object]) -> SignalRequest:
        request = SignalRequest()
        data = frame.get("bytes")
        if isinstance(data, bytes):
            self.json = False
            request.ParseFromString(data)
        else:
            self.json = True
            json_format.Parse(str(frame.get("text") or ""), request)
        return request

    async def send(self, websocket: WebSocket, response: SignalResponse) -> None:
        if self.json:
            await websocket.send_text(json_format.MessageToJson(response))
        else:
            await websocket.send_bytes(response.SerializeToString())


class SignalService:
    """Routes for `/rtc`, `/rtc/v1` and their validate endpoints."""

    def __init__(
        self,
        keys: KeyRing,
        rooms: RoomManager,
        *,
        auto_create: bool = True,
        single_pc: bool = True,
    ) -> None:
        """`auto_create=False` is LiveKit's `room.auto_create: false`: joining a room that does
        not exist needs the roomCreate grant. `single_pc=False` serves no `/rtc/v1` (404, as
        servers before 1.9.10), so clients take the two-connection fallback."""
        self._single_pc = single_pc
        self._keys = keys
        self._rooms = rooms
        self._auto_create = auto_create
        self.sessions: set[asyncio.Task[None]] = set()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/rtc/validate", self._validate_v0, methods=["GET"]),
            Route("/rtc/v1/validate", self._validate_v1, methods=["GET"]),
            WebSocketRoute("/rtc", self._serve_v0),
            WebSocketRoute("/rtc/v1", self._serve_v1),
            Route("/rtc", _not_found),
            Route("/rtc/v1", _not_found),
        ]

    # -- validate --------------------------------------------------------------------------

    async def _validate_v0(self, request: Request) -> Response:
        return self._validate(request, single_pc=False)

    async def _validate_v1(self, request: Request) -> Response:
        if not self._single_pc:
            return Response(status_code=404)
        return self._validate(request, single_pc=True)

    def _validate(self, request: Request, *, single_pc: bool) -> Response:
        headers = {"Access-Control-Allow-Origin": "*"}
        try:
            _check(
                self._keys,
                request,
                single_pc=single_pc,
                rooms=self._rooms,
                auto_create=self._auto_create,
            )
        except Refused as exc:
            log.warning(
                "connection refused",
                extra={"path": request.url.path, "status": exc.status, "error": exc.message},
            )
            return PlainTextResponse(exc.message, status_code=exc.status, headers=headers)
        return PlainTextResponse("success", headers=headers)

    # -- the signal socket -----------------------------------------------------------------

    async def _serve_v0(self, websocket: WebSocket) -> None:
        await self._serve(websocket, single_pc=False)

    async def _serve_v1(self, websocket: WebSocket) -> None:
        if not self._single_pc:
            await websocket.send_denial_response(Response(status_code=404))
            return
        await self._serve(websocket, single_pc=True)

    async def _serve(self, websocket: WebSocket, *, single_pc: bool) -> None:
        started = time.monotonic()
        try:
            params = _check(
                self._keys,
                websocket,
                single_pc=single_pc,
                rooms=self._rooms,
                auto_create=self._auto_create,
            )
        except Refused as exc:
            log.warning(
                "connection refused",
                extra={"path": websocket.url.path, "status": exc.status, "error": exc.message},
            )
            await websocket.send_denial_response(
                PlainTextResponse(exc.message, status_code=exc.status)
            )
            return
        room, _ = self._rooms.get_or_create(params.room, params.grants.claims.room_config)
        await websocket.accept()
        codec = _Codec()
        if params.reconnect:
            # No session resumption here: a client trying to resume is told to rejoin fully,
            # as LiveKit tells one whose participant is gone.
            await codec.send(
                websocket,
                SignalResponse(
                    leave=LeaveRequest(
                        reason=DisconnectReason.STATE_MISMATCH,
                        action=LeaveRequest.Action.RECONNECT,
                        can_reconnect=True,
                    )
                ),
            )
            await websocket.close()
            return
        participant = Participant(
            identity=params.grants.claims.identity,
            grants=params.grants,
            single_pc=single_pc,
            auto_subscribe=params.auto_subscribe,
            client_protocol=params.join.client_info.protocol,
        )
        if params.join.metadata:
            participant.metadata = params.join.metadata
        for key, value in params.join.participant_attributes.items():
            if value:
                participant.attributes[key] = value
        session = _Session(self._rooms, room, participant, websocket, codec)
        try:
            await self._rooms.join(room, participant)
        except RoomError as exc:
            log.warning("join failed", extra={"room": room.name, "error": exc.message})
            await websocket.close(code=1011)
            return
        log.info(
            "signal connected",
            extra={
                "room": room.name,
                "participant": participant.identity,
                "join_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        await session.run(params.join)


class _Session:
    """One participant's signal connection after JoinResponse."""

    def __init__(
        self,
        rooms: RoomManager,
        room: Room,
        participant: Participant,
        websocket: WebSocket,
        codec: _Codec,
    ) -> None:
        self._rooms = rooms
        self._room = room
        self._participant = participant
        self._websocket = websocket
        self._codec = codec
        # aiortc loads with the first participant, not with the server: `voicegw serve
        # --simulate` starts the stand-in on its way up.
        from .media import ParticipantMedia

        self._media = ParticipantMedia(rooms, room, participant)
        participant.media = self._media
        self._handlers: dict[str, Callable[[SignalRequest], Awaitable[None]]] = {
            "offer": self._offer,
            "answer": self._answer,
            "trickle": self._trickle,
            "add_track": self._add_track,
            "mute": self._mute,
            "subscription": self._subscription,
            "leave": self._leave,
            "ping": self._ping,
            "ping_req": self._ping_req,
            "update_metadata": self._update_metadata,
        }

    async def run(self, join: JoinRequest) -> None:
        writer = asyncio.get_running_loop().create_task(self._write())
        reason: DisconnectReason = DisconnectReason.SIGNAL_CLOSE
        try:
            await self._media.start()
            for request in join.add_track_requests:
                await self._add_track(SignalRequest(add_track=request))
            if join.HasField("publisher_offer"):
                await self._media.handle_offer(join.publisher_offer)
            reason = await self._read()
        finally:
            await self._rooms.remove(self._room, self._participant, reason)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(writer, 2.0)
            if self._websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self._websocket.close()

    async def _read(self) -> DisconnectReason:
        """Serve requests until the client leaves or the socket ends."""
        while not self._participant.closed.is_set():
            try:
                frame = await self._websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return DisconnectReason.SIGNAL_CLOSE
            if frame["type"] == "websocket.disconnect":
                return DisconnectReason.SIGNAL_CLOSE
            try:
                request = self._codec.decode(frame)
            except (DecodeError, json_format.ParseError):
                log.warning(
                    "error reading from websocket",
                    extra={**self._fields(), "error": "undecodable signal request"},
                )
                return DisconnectReason.SIGNAL_CLOSE
            which = request.WhichOneof("message")
            handler = self._handlers.get(which or "")
            if handler is None:
                log.info("signal request ignored", extra={**self._fields(), "request": which})
                continue
            await handler(request)
        return self._participant.disconnect_reason

    async def _write(self) -> None:
        """Write queued responses; None (the participant left) closes the socket."""
        outbox = self._participant.outbox
        while True:
            response = await outbox.get()
            if response is None:
                break
            try:
                await self._codec.send(self._websocket, response)
            except Exception:
                return
        with contextlib.suppress(Exception):
            await self._websocket.close()

    # -- handlers --------------------------------------------------------------------------

    async def _offer(self, request: SignalRequest) -> None:
        await self._media.handle_offer(request.offer)

    async def _answer(self, request: SignalRequest) -> None:
        await self._media.handle_answer(request.answer)

    async def _trickle(self, request: SignalRequest) -> None:
        await self._media.handle_trickle(request.trickle)

    async def _add_track(self, request: SignalRequest) -> None:
        info = self._media.add_track(request.add_track)
        if info is None:
            answer = RequestResponse(reason=RequestResponse.Reason.NOT_ALLOWED)
            answer.add_track.CopyFrom(request.add_track)
            self._participant.send(SignalResponse(request_response=answer))
            log.warning("no permission to publish track", extra=self._fields())
            return
        self._participant.send(
            SignalResponse(
                track_published=TrackPublishedResponse(cid=request.add_track.cid, track=info)
            )
        )

    async def _mute(self, request: SignalRequest) -> None:
        track = self._participant.tracks.get(request.mute.sid)
        if track is not None and track.muted != request.mute.muted:
            track.muted = request.mute.muted
            self._participant.changed()
            self._rooms.announce(self._room, self._participant)

    async def _subscription(self, request: SignalRequest) -> None:
        update = request.subscription
        sids = list(update.track_sids)
        for entry in update.participant_tracks:
            sids.extend(entry.track_sids)
        for sid in sids:
            if update.subscribe:
                track = self._room.published.get(sid)
                if track is not None and track.publisher is not self._participant:
                    self._media.subscribe(track)
            else:
                self._media.unsubscribe(sid)

    async def _leave(self, request: SignalRequest) -> None:
        log.info(
            "client leaving room",
            extra={**self._fields(), "reason": DisconnectReason.Name(request.leave.reason)},
        )
        await self._rooms.remove(self._room, self._participant, DisconnectReason.CLIENT_INITIATED)

    async def _ping(self, request: SignalRequest) -> None:
        # LiveKit answers in milliseconds: the JS client overflows on nanoseconds.
        self._participant.send(SignalResponse(pong=int(time.time() * 1000)))

    async def _ping_req(self, request: SignalRequest) -> None:
        self._participant.send(
            SignalResponse(
                pong_resp=Pong(
                    last_ping_timestamp=request.ping_req.timestamp,
                    timestamp=int(time.time() * 1000),
                )
            )
        )

    async def _update_metadata(self, request: SignalRequest) -> None:
        self._rooms.update_metadata(self._room, self._participant, request.update_metadata)

    def _fields(self) -> dict[str, str]:
        return {"room": self._room.name, "participant": self._participant.identity}


async def _not_found(request: Request) -> Response:
    """Not a WebSocket upgrade: LiveKit answers 404."""
    return Response(status_code=404)
