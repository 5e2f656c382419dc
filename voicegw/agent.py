"""`voicegw agent dev|start`: the LiveKit Agents worker, run on livekit-agents' public API.

`AgentServer.run(devmode=...)` runs the worker. Around it, what livekit-agents' own CLI runner
does that matters here: the first SIGINT or SIGTERM stops it gracefully (in `start`, running
jobs finish first: `drain()`, up to the server's drain timeout; then `aclose()`), a second one
exits at once, and a worker that fails for good (LiveKit unreachable after its retries) exits
1 saying why. Logs are the gateway's JSON lines (`voicegw.logs`) on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import warnings
from types import FrameType
from typing import Any

import jwt
from livekit.agents import AgentServer, JobProcess, Plugin

from history import History, HistoryConfig
from pipelines.contracts import Settings, load_settings
from pipelines.livekit.pipeline import PipelineOptions
from pipelines.livekit.worker import HISTORY, create_server, prewarm

from . import providers
from .logs import quiet_agent_libraries

log = logging.getLogger("voicegw.agent")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class AgentFailed(Exception):
    """The worker stopped on its own; the message says why."""


def missing_for_agent(settings: Settings) -> list[str]:
    """What the worker cannot run without: its providers' keys, and in production its LiveKit
    (in dev, unset LiveKit variables are `livekit-server --dev`'s). Nothing of the gateway's."""
    missing = settings.missing_for("livekit") if settings.voicegw_env == "production" else []
    return missing + PipelineOptions.from_settings(settings).missing_keys()


def run_agent(settings: Settings, *, dev: bool, log_level: str) -> None:
    """Run the worker until the process is told to stop; AgentFailed when it stops by itself."""
    providers.report(settings, ("agent",))
    server = create_server(settings, devmode=dev, setup=setup_job_process)
    framework = ("livekit.agents", *(p.logger.name for p in Plugin.registered_plugins if p.logger))
    quiet_agent_libraries(log_level, framework)
    logging.captureWarnings(True)  # a library's warning is one more JSON line, not raw text
    # LiveKit API secrets are LiveKit's to choose (`livekit-server --dev` uses "secret"); the
    # worker signs its registration with it on every connection attempt.
    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
    asyncio.run(serve_agent(server, devmode=dev))


def setup_job_process(proc: JobProcess) -> None:
    """Each job process: the worker's `prewarm`, and the session history its jobs record into
    (HISTORY_ENABLED; the same database as the gateway's: DATABASE_URL, or the SQLite file
    under VOICEGW_DATA_DIR). It brings the schema to head itself (under the migration lock),
    so an agent service that starts before any gateway still records; it prunes nothing (the
    gateway does)."""
    prewarm(proc)
    settings = load_settings(process="agent")
    if settings.history_enabled:
        history = History(HistoryConfig.from_settings(settings), migrate=True, retention=False)
        proc.userdata[HISTORY] = history.recorder


async def serve_agent(server: AgentServer, *, devmode: bool) -> None:
    """Run `server` until a signal (then drain, unless in dev, and close) or its own end."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()

    def force_exit(sig: int, frame: FrameType | None) -> None:
        # A plain handler, not the loop's: it works even while the loop is busy.
        log.warning("exiting forcefully", extra={"signal": signal.Signals(sig).name})
        os._exit(1)

    def stop_gracefully(sig: signal.Signals) -> None:
        if not stop.done():
            stop.set_result(sig)
        for each in HANDLED_SIGNALS:  # a second signal does not wait for the drain
            loop.remove_signal_handler(each)
            signal.signal(each, force_exit)

    for sig in HANDLED_SIGNALS:
        loop.add_signal_handler(sig, stop_gracefully, sig)
    worker = asyncio.create_task(server.run(devmode=devmode), name="agent-worker")
    try:
        either: list[asyncio.Future[Any]] = [worker, stop]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if worker.done():
            error = worker.exception()
            raise AgentFailed(str(error) if error else "the worker stopped by itself")
        log.info("agent stopping", extra={"signal": signal.Signals(stop.result()).name})
        if not devmode:
            try:
                await server.drain()
            except TimeoutError:
                log.warning("drain timed out; closing with jobs still running")
    finally:
        await server.aclose()
        if not worker.done():
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
        for sig in HANDLED_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_DFL)
