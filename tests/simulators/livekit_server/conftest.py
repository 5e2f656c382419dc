"""Fixtures for the LiveKit stand-in's own tests: the server, tokens, and three kinds of client
that speak its protocols over real sockets: a raw signal client and a raw agent worker (for the
protocol details a real SDK never gets wrong on purpose) and the real Python rtc SDK in a
process of its own (`RtcParticipant`, for media and data).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gzip
import json
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from livekit import api
from livekit.protocol.agent import (
    AvailabilityRequest,
    JobType,
    RegisterWorkerRequest,
    ServerMessage,
    UpdateWorkerStatus,
    WorkerMessage,
    WorkerStatus,
)
from livekit.protocol.room import RoomConfiguration
from livekit.protocol.rtc import JoinRequest, SignalRequest, SignalResponse, WrappedJoinRequest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from simulators.livekit_server import LiveKitServer
from tests.netns import NetNamespace, in_netns, netns  # noqa: F401 - fixtures

API_KEY = "APIstandintest"
API_SECRET = "standin-test-secret-" * 3  # >= 32 bytes: pyjwt warns on shorter HMAC keys
KEYS = {API_KEY: API_SECRET}
ROOT = Path(__file__).resolve().parents[3]


def token(
    identity: str,
    room: str = "room-1",
    *,
    config: RoomConfiguration | None = None,
    kind: str = "",
    ttl: datetime.timedelta = datetime.timedelta(minutes=10),
    secret: str = API_SECRET,
    key: str = API_KEY,
    **grants: Any,
) -> str:
    """A join token; `grants` override VideoGrants fields (room_join defaults to True)."""
    video = api.VideoGrants(room_join=True, room=room)
    for name, value in grants.items():
        setattr(video, name, value)
    access = api.AccessToken(key, secret).with_identity(identity).with_grants(video).with_ttl(ttl)
    if config is not None:
        access = access.with_room_config(config)
    if kind:
        access = access.with_kind(kind)  # type: ignore[arg-type]
    return access.to_jwt()


def admin_token(room: str = "") -> str:
    grants = api.VideoGrants(room_admin=True, room_list=True, room_create=True, room=room)
    return api.AccessToken(API_KEY, API_SECRET).with_grants(grants).to_jwt()


async def wait_until(condition: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Poll server state (owned by this loop) until `condition` holds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Every log call of the stand-in builds its record (as under `voicegw serve`, at INFO),
    so a field named like a LogRecord attribute fails here, not in someone's room."""
    caplog.set_level(logging.DEBUG, logger="livekit_server")


@pytest.fixture
async def server() -> AsyncIterator[LiveKitServer]:
    """The stand-in on 127.0.0.1 (no media: the signal, API and agent protocols)."""
    stand_in = LiveKitServer(KEYS, idle_check_s=0.05, rng=random.Random(7))
    async with stand_in.serve():
        yield stand_in


@pytest.fixture
async def ns_server(in_netns: NetNamespace) -> AsyncIterator[LiveKitServer]:  # noqa: F811
    """The stand-in inside the test's network namespace, on its veth address (for media)."""
    stand_in = LiveKitServer(KEYS, idle_check_s=0.05, rng=random.Random(7))
    async with stand_in.serve(in_netns.address):
        yield stand_in


# -- a raw signal client -------------------------------------------------------------------


def join_query(join: JoinRequest | None = None) -> str:
    """`/rtc/v1`'s `join_request` parameter: a gzip-wrapped JoinRequest, base64url."""
    join = join or JoinRequest()
    join.connection_settings.auto_subscribe = True
    wrapped = WrappedJoinRequest(
        compression=WrappedJoinRequest.Compression.GZIP,
        join_request=gzip.compress(join.SerializeToString()),
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


class SignalClient:
    """A signal connection that speaks protobuf frames directly."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[SignalResponse] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, server: LiveKitServer, jwt: str, *, path: str = "/rtc/v1"
    ) -> AsyncIterator[SignalClient]:
        query = f"?join_request={join_query()}" if path == "/rtc/v1" else ""
        async with connect(
            f"{server.ws_url}{path}{query}",
            additional_headers={"Authorization": f"Bearer {jwt}"},
            compression=None,
        ) as ws:
            yield cls(ws)

    async def send(self, request: SignalRequest) -> None:
        await self.ws.send(request.SerializeToString())

    async def next(self, which: str, within: float = 5.0) -> SignalResponse:
        """The next response of kind `which` (others are kept in `received`)."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.ws.recv()
                assert isinstance(frame, bytes), "the server answers protobuf in binary frames"
                response = SignalResponse()
                response.ParseFromString(frame)
                self.received.append(response)
                if response.WhichOneof("message") == which:
                    return response

    async def closed(self, within: float = 5.0) -> None:
        """Wait until the server closes the connection."""
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.ws.recv()


# -- a raw agent worker --------------------------------------------------------------------


class FakeWorker:
    """A worker speaking the `/agent` protocol by hand, so a test decides every answer."""

    def __init__(self, ws: ClientConnection, worker_id: str) -> None:
        self.ws = ws
        self.id = worker_id
        self.messages: asyncio.Queue[ServerMessage] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        server: LiveKitServer,
        agent_name: str = "voice-agent",
        *,
        key: str = API_KEY,
        secret: str = API_SECRET,
    ) -> AsyncIterator[FakeWorker]:
        jwt = api.AccessToken(key, secret).with_grants(api.VideoGrants(agent=True))
        async with connect(
            f"{server.ws_url}/agent",
            additional_headers={"Authorization": f"Bearer {jwt.to_jwt()}"},
            compression=None,
        ) as ws:
            register = WorkerMessage(
                register=RegisterWorkerRequest(
                    type=JobType.JT_ROOM, agent_name=agent_name, version="test"
                )
            )
            await ws.send(register.SerializeToString())
            reply = ServerMessage()
            reply.ParseFromString(await ws.recv())  # type: ignore[arg-type]
            assert reply.WhichOneof("message") == "register", reply
            worker = cls(ws, reply.register.worker_id)
            try:
                yield worker
            finally:
                worker._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker._reader

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                message = ServerMessage()
                message.ParseFromString(frame)  # type: ignore[arg-type]
                await self.messages.put(message)

    async def next(self, which: str, within: float = 5.0) -> ServerMessage:
        async with asyncio.timeout(within):
            while True:
                message = await self.messages.get()
                if message.WhichOneof("message") == which:
                    return message

    async def send(self, message: WorkerMessage) -> None:
        await self.ws.send(message.SerializeToString())

    async def report(
        self, *, load: float, status: WorkerStatus = WorkerStatus.WS_AVAILABLE
    ) -> None:
        await self.send(WorkerMessage(update_worker=UpdateWorkerStatus(load=load, status=status)))

    async def answer(self, request: AvailabilityRequest, *, available: bool, identity: str) -> None:
        message = WorkerMessage()
        message.availability.job_id = request.job.id
        message.availability.available = available
        message.availability.participant_identity = identity
        message.availability.participant_name = identity
        await self.send(message)


# -- the real Python rtc SDK in a process of its own -----------------------------------------


class RtcParticipant:
    """`rtc_participant.py` in a subprocess (started on the calling thread, so inside the
    test's namespace when the test entered it)."""

    def __init__(self, process: asyncio.subprocess.Process, identity: str) -> None:
        self.process = process
        self.identity = identity
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._stderr = bytearray()
        self._drain = asyncio.get_running_loop().create_task(self._read_stderr())

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, url: str, jwt: str, identity: str) -> AsyncIterator[RtcParticipant]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.simulators.livekit_server.rtc_participant",
            url,
            jwt,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        participant = cls(process, identity)
        try:
            yield participant
        finally:
            await participant.stop()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()

    async def _read_stderr(self) -> None:
        # libwebrtc logs a lot; a full pipe would stall the participant.
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(65536):
            self._stderr.extend(chunk)

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    async def command(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        await self.process.stdin.drain()

    async def wait_for(
        self,
        event: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
        within: float = 20.0,
    ) -> dict[str, Any]:
        """The first event named `event` that satisfies `predicate`."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if e["event"] == event and predicate(e)), None)

        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: found() is not None or self._reader.done())
        except TimeoutError:
            pass
        match = found()
        if match is None:
            raise AssertionError(
                f"{self.identity}: no {event!r} event; got {self.events[-8:]}; "
                f"stderr: {self.stderr[-2000:]}"
            )
        return match

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.command("leave")
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in (self._reader, self._drain):
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)
