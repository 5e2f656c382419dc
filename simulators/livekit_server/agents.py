"""Agent workers at `/agent` and the jobs dispatched to them (livekit `pkg/agent/worker.go`,
`pkg/service/agentservice.go`, `pkg/agent/client.go`).

A worker connects with a token whose video grant has `agent`, sends `register` (its agent name,
job type, allowed permissions) and gets `register` back (worker id, server info); it then
reports `update_worker` (load, status) and pings. A dispatch becomes a job: the server picks a
worker registered for that agent name and job type, at random weighted by `1 - load` among the
ones whose status is available, sends `availability`; an `available` answer gets a
`JobAssignment` with a join token minted like LiveKit's BuildAgentToken; `not available` or a
worker that goes away makes it try the next worker, no worker left ends the attempt (the
dispatch stays without a job, as in LiveKit). `update_job` tracks the job; ending a room or the
agent leaving it sends `termination`.

Job state in ListDispatch: LiveKit's open-source server copies a job's state into the dispatch
when the job is assigned and never updates it (livekit/agents#1472: "LiveKit Cloud handles
this"). `track_job_status=True` (the default) keeps the dispatch's job state current from
`update_job`, terminations and worker loss, which is what a client of LiveKit Cloud sees;
`False` gives the open-source behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol.agent import (
    AvailabilityRequest,
    AvailabilityResponse,
    Job,
    JobAssignment,
    JobState,
    JobStatus,
    JobTermination,
    JobType,
    RegisterWorkerResponse,
    ServerMessage,
    UpdateJobStatus,
    UpdateWorkerStatus,
    WorkerMessage,
    WorkerPong,
    WorkerStatus,
)
from livekit.protocol.agent_dispatch import AgentDispatch
from livekit.protocol.models import ParticipantPermission
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .auth import AGENT_NAME_ATTRIBUTE, Grants, KeyRing, build_agent_token
from .rooms import Room, new_id, server_info

log = logging.getLogger("livekit_server.agents")

REGISTER_TIMEOUT_S = 10.0
ASSIGN_TIMEOUT_S = 10.0
_ENDED = (JobStatus.JS_SUCCESS, JobStatus.JS_FAILED)


class WorkerUnavailable(Exception):
    """The worker said no, or went away while asked."""


@dataclass(eq=False)
class Worker:
    """A registered worker connection."""

    id: str
    agent_name: str
    namespace: str
    job_type: JobType
    permission: ParticipantPermission
    version: str
    api_key: str
    api_secret: str
    load: float = 0.0
    status: WorkerStatus = WorkerStatus.WS_AVAILABLE
    outbox: asyncio.Queue[ServerMessage | None] = field(default_factory=asyncio.Queue)
    pending: dict[str, asyncio.Future[AvailabilityResponse]] = field(default_factory=dict)
    running: dict[str, Job] = field(default_factory=dict)
    closed: bool = False

    def send(self, message: ServerMessage) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)


class AgentDispatcher:
    """The worker registry and job assignment; implements rooms' `JobLauncher`."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        track_job_status: bool = True,
        rng: random.Random | None = None,
        assign_timeout_s: float = ASSIGN_TIMEOUT_S,
        register_timeout_s: float = REGISTER_TIMEOUT_S,
    ) -> None:
        """`rng` picks among workers (seed it for a repeatable spread)."""
        self._keys = keys
        self.track_job_status = track_job_status
        self._rng = rng or random.Random()
        self._assign_timeout_s = assign_timeout_s
        self._register_timeout_s = register_timeout_s
        self.workers: dict[str, Worker] = {}
        self._job_worker: dict[str, Worker] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.registered = asyncio.Condition()

    # -- JobLauncher -----------------------------------------------------------------------

    def launch(self, room: Room, dispatch: AgentDispatch) -> None:
        task = asyncio.get_running_loop().create_task(self._launch(room, dispatch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def terminate(self, job_id: str, *, agent_left: bool) -> None:
        worker = self._job_worker.pop(job_id, None)
        if worker is None:
            return
        job = worker.running.pop(job_id, None)
        worker.send(ServerMessage(termination=JobTermination(job_id=job_id)))
        if job is not None:
            status = JobStatus.JS_FAILED if agent_left else JobStatus.JS_SUCCESS
            error = "agent worker left the room" if agent_left else ""
            _set_status(job.state, status, error)
        log.info(
            "job terminated",
            extra={"job_id": job_id, "worker_id": worker.id, "agent_left": agent_left},
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- assignment ------------------------------------------------------------------------

    async def _launch(self, room: Room, dispatch: AgentDispatch) -> None:
        job = Job(
            id=new_id("AJ_"),
            dispatch_id=dispatch.id,
            type=JobType.JT_ROOM,
            room=room.to_proto(),
            agent_name=dispatch.agent_name,
            metadata=dispatch.metadata,
        )
        fields = {"room": room.name, "job_id": job.id, "agent_name": dispatch.agent_name}
        attempted: set[Worker] = set()
        while True:
            worker = self._select(dispatch.agent_name, JobType.JT_ROOM, attempted)
            if worker is None:
                log.warning("no worker available to handle job", extra=fields)
                return
            attempted.add(worker)
            try:
                identity = await self._assign(worker, job)
            except WorkerUnavailable as exc:
                log.info(
                    "worker declined job, trying another",
                    extra={**fields, "worker_id": worker.id, "why": str(exc)},
                )
                continue
            except TimeoutError:
                log.warning(
                    "agent worker availability timeout", extra={**fields, "worker_id": worker.id}
                )
                return
            if room.closed or dispatch.id not in room.dispatches:
                self.terminate(job.id, agent_left=False)
                return
            dispatch.state.jobs.append(job)  # protobuf stores a copy
            if self.track_job_status and job.id in worker.running:
                # The worker's updates now change the dispatch's copy (what ListDispatch shows).
                worker.running[job.id] = dispatch.state.jobs[-1]
            if identity:
                room.agent_jobs[identity] = job.id
            return

    def _select(self, agent_name: str, job_type: JobType, attempted: set[Worker]) -> Worker | None:
        """LiveKit's selectWorkerWeightedByLoad."""
        weights = [
            (w, max(0.0, 1.0 - w.load))
            for w in self.workers.values()
            if w.agent_name == agent_name
            and w.job_type == job_type
            and w not in attempted
            and w.status == WorkerStatus.WS_AVAILABLE
        ]
        total = sum(weight for _, weight in weights)
        if total <= 0:
            return None
        point = self._rng.random() * total
        for worker, weight in weights:
            point -= weight
            if point <= 0:
                return worker
        return weights[-1][0]

    async def _assign(self, worker: Worker, job: Job) -> str:
        """Ask `worker` to take `job`; on yes, assign it. Returns the agent's identity."""
        now = time.time_ns()
        job.state.CopyFrom(
            JobState(
                worker_id=worker.id,
                status=JobStatus.JS_RUNNING,
                started_at=now,
                updated_at=now,
            )
        )
        answer: asyncio.Future[AvailabilityResponse] = asyncio.get_running_loop().create_future()
        worker.pending[job.id] = answer
        worker.send(ServerMessage(availability=AvailabilityRequest(job=job)))
        try:
            async with asyncio.timeout(self._assign_timeout_s):
                response = await answer
        finally:
            worker.pending.pop(job.id, None)
        if response.terminate:
            _set_status(job.state, JobStatus.JS_SUCCESS, "")
            return ""
        if not response.available:
            raise WorkerUnavailable("not available")
        job.state.participant_identity = response.participant_identity
        attributes = dict(response.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
        token = build_agent_token(
            api_key=worker.api_key,
            api_secret=worker.api_secret,
            room=job.room.name,
            identity=response.participant_identity,
            name=response.participant_name,
            metadata=response.participant_metadata,
            attributes=attributes,
            permission=worker.permission,
        )
        worker.running[job.id] = job
        self._job_worker[job.id] = worker
        worker.send(ServerMessage(assignment=JobAssignment(job=job, token=token)))
        log.info(
            "assigned job to worker",
            extra={
                "job_id": job.id,
                "worker_id": worker.id,
                "room": job.room.name,
                "agent_identity": response.participant_identity,
            },
        )
        return response.participant_identity

    # -- the worker socket -----------------------------------------------------------------

    async def serve(self, websocket: WebSocket, grants: Grants) -> None:
        """Run one worker connection until it closes (the caller has checked the `agent`
        grant and accepted the socket)."""
        secret = self._keys.secret(grants.api_key) or ""
        worker: Worker | None = None
        writer: asyncio.Task[None] | None = None
        json_mode = False
        try:
            async with asyncio.timeout(self._register_timeout_s):
                while worker is None:
                    message, json_mode = await _read(websocket)
                    if message is None:
                        return
                    which = message.WhichOneof("message")
                    if which == "ping":
                        await _write(websocket, _pong(message), json_mode)
                    elif which == "register":
                        worker = self._register(message, grants.api_key, secret)
                        if worker is None:
                            return
                    else:
                        log.warning("worker message before register", extra={"request": which})
                        return
            writer = asyncio.get_running_loop().create_task(
                _pump(websocket, worker.outbox, lambda: json_mode)
            )
            worker.send(
                ServerMessage(
                    register=RegisterWorkerResponse(worker_id=worker.id, server_info=server_info())
                )
            )
            async with self.registered:
                self.registered.notify_all()
            while True:
                message, json_mode = await _read(websocket)
                if message is None or not self._handle(worker, message):
                    return
        except TimeoutError:
            log.warning("worker did not register in time")
        finally:
            if worker is not None:
                self._deregister(worker)
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close()

    def _register(self, message: WorkerMessage, api_key: str, secret: str) -> Worker | None:
        request = message.register
        if request.type not in JobType.values():
            log.warning("worker registered an unknown job type", extra={"type": request.type})
            return None
        permission = (
            request.allowed_permissions
            if request.HasField("allowed_permissions")
            else ParticipantPermission(
                can_subscribe=True,
                can_publish=True,
                can_publish_data=True,
                can_update_metadata=True,
            )
        )
        worker = Worker(
            id=new_id("AW_"),
            agent_name=request.agent_name,
            namespace=request.namespace,
            job_type=request.type,
            permission=permission,
            version=request.version,
            api_key=api_key,
            api_secret=secret,
        )
        self.workers[worker.id] = worker
        log.info(
            "worker registered",
            extra={
                "worker_id": worker.id,
                "agent_name": worker.agent_name,
                "job_type": JobType.Name(worker.job_type),
                "version": worker.version,
            },
        )
        return worker

    def _handle(self, worker: Worker, message: WorkerMessage) -> bool:
        """One message from a registered worker; False ends the connection (LiveKit closes
        it on a message it cannot handle)."""
        which = message.WhichOneof("message")
        if which == "availability":
            future = worker.pending.get(message.availability.job_id)
            if future is None or future.done():
                log.warning(
                    "availability response for unknown job",
                    extra={"worker_id": worker.id, "job_id": message.availability.job_id},
                )
            else:
                future.set_result(message.availability)
        elif which == "update_job":
            self._update_job(worker, message.update_job)
        elif which == "update_worker":
            self._update_worker(worker, message.update_worker)
        elif which == "ping":
            worker.send(_pong(message))
        elif which in ("simulate_job", "migrate_job"):
            log.info("worker request ignored", extra={"worker_id": worker.id, "request": which})
        else:
            log.warning("unable to handle worker signal", extra={"worker_id": worker.id})
            return False
        return True

    def _update_job(self, worker: Worker, update: UpdateJobStatus) -> None:
        job = worker.running.get(update.job_id)
        if job is None:
            log.debug("job update for unknown job", extra={"job_id": update.job_id})
            return
        _set_status(job.state, update.status, update.error)
        log.info(
            "job status",
            extra={
                "job_id": update.job_id,
                "worker_id": worker.id,
                "status": JobStatus.Name(update.status),
            },
        )
        if update.status in _ENDED:
            worker.running.pop(update.job_id, None)
            self._job_worker.pop(update.job_id, None)

    def _update_worker(self, worker: Worker, update: UpdateWorkerStatus) -> None:
        if update.HasField("status") and update.status != worker.status:
            log.info(
                "worker status",
                extra={"worker_id": worker.id, "status": WorkerStatus.Name(update.status)},
            )
            worker.status = update.status
        worker.load = update.load

    def _deregister(self, worker: Worker) -> None:
        worker.closed = True
        self.workers.pop(worker.id, None)
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerUnavailable("worker closed"))
        for job_id, job in list(worker.running.items()):
            self._job_worker.pop(job_id, None)
            _set_status(job.state, JobStatus.JS_FAILED, "worker disconnected")
        lost = len(worker.running)
        worker.running.clear()
        log.info("worker deregistered", extra={"worker_id": worker.id, "jobs_lost": lost})


def _set_status(state: JobState, status: JobStatus, error: str) -> None:
    now = time.time_ns()
    state.status = status
    state.error = error
    state.updated_at = now
    if status in _ENDED:
        state.ended_at = now


def _pong(message: WorkerMessage) -> ServerMessage:
    return ServerMessage(
        pong=WorkerPong(last_timestamp=message.ping.timestamp, timestamp=int(time.time() * 1000))
    )


async def _read(websocket: WebSocket) -> tuple[WorkerMessage | None, bool]:
    """The next message (None when the socket closed or sent something undecodable, which
    LiveKit answers by closing) and whether it came as JSON."""
    try:
        frame = await websocket.receive()
    except WebSocketDisconnect:
        return None, False
    if frame["type"] == "websocket.disconnect":
        return None, False
    message = WorkerMessage()
    try:
        if frame.get("bytes") is not None:
            message.ParseFromString(frame["bytes"])
            return message, False
        json_format.Parse(frame.get("text") or "", message)
        return message, True
    except (DecodeError, json_format.ParseError):
        log.warning("undecodable worker message, closing")
        return None, False


async def _write(websocket: WebSocket, message: ServerMessage, json_mode: bool) -> None:
    if json_mode:
        await websocket.send_text(json_format.MessageToJson(message))
    else:
        await websocket.send_bytes(message.SerializeToString())


async def _pump(
    websocket: WebSocket,
    outbox: asyncio.Queue[ServerMessage | None],
    json_mode: Callable[[], bool],
) -> None:
    """Write queued messages until None or the socket fails."""
    while True:
        message = await outbox.get()
        if message is None:
            return
        try:
            await _write(websocket, message, json_mode())
        except Exception:
            return
