"""A child process kept running: `voicegw serve --simulate` runs its agent worker this way.

`Supervised` starts the command in a process group of its own (the worker forks job processes;
the group lets it stop them all), restarts it with a log line whenever it exits without being
asked to, backing off while it keeps failing quickly, and stops it when the block ends: SIGTERM
(the worker drains and closes), then SIGKILL to the whole group after `stop_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import IO, Any

log = logging.getLogger("voicegw.supervise")

# A run shorter than this counts as a quick failure, which doubles the wait before the next
# start (up to MAX_DELAY_S); a longer run starts the count again.
QUICK_FAILURE_S = 30.0
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


class Supervised:
    """One supervised child process. `pid` is the current process's id (None between runs),
    `starts` how many times it was started."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        name: str,
        restart: bool = True,
        first_delay_s: float = FIRST_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
        stop_timeout_s: float = 15.0,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
    ) -> None:
        """`name` goes on every log line; `restart=False` only logs that the process ended;
        a restart waits `first_delay_s`, doubled after each quick failure up to `max_delay_s`;
        `stdout`/`stderr` default to this process's."""
        self.argv = list(argv)
        self.env = dict(env)
        self.name = name
        self.restart = restart
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.stop_timeout_s = stop_timeout_s
        self._stdout = stdout
        self._stderr = stderr
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.started = asyncio.Event()  # set on each start, cleared when the process exits
        self._stopping = False
        self._spawning = asyncio.Lock()  # stop() never races a start
        self._watcher: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    async def __aenter__(self) -> Supervised:
        await self.start()
        return self

    async def start(self) -> None:
        """Start the process and keep it running until `stop()` (once)."""
        assert self._watcher is None and not self._stopping, "start() once, before stop()"
        try:
            async with self._spawning:
                await self._spawn()
        except BaseException:
            await self.stop()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _spawn(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,
        )
        self.starts += 1
        self.started.set()
        log.info(
            "supervised process started",
            extra={"child": self.name, "pid": self.process.pid, "starts": self.starts},
        )

    async def _watch(self) -> None:
        """Wait for the process to end; unless stopping, start it again after a delay."""
        quick_failures = 0
        while True:
            process = self.process
            assert process is not None
            began = time.monotonic()
            code = await process.wait()
            self.started.clear()
            _kill_group(process.pid)  # job processes the dead worker left behind
            if self._stopping:
                return
            if not self.restart:
                log.warning(
                    "supervised process exited",
                    extra={"child": self.name, "pid": process.pid, "exit": _describe_exit(code)},
                )
                return
            quick_failures = quick_failures + 1 if time.monotonic() - began < QUICK_FAILURE_S else 0
            delay = min(self.max_delay_s, self.first_delay_s * 2 ** max(0, quick_failures - 1))
            log.warning(
                "supervised process exited, restarting",
                extra={
                    "child": self.name,
                    "pid": process.pid,
                    "exit": _describe_exit(code),
                    "restart_in_s": delay,
                },
            )
            await asyncio.sleep(delay)
            async with self._spawning:
                if self._stopping:
                    return
                await self._spawn()

    async def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL to its group) and stop restarting it.
        Safe to call twice; cancelling it leaves the process killed."""
        async with self._spawning:
            self._stopping = True
        process = self.process
        try:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), self.stop_timeout_s)
                except TimeoutError:
                    log.warning(
                        "supervised process did not stop in time, killing it",
                        extra={"child": self.name, "pid": process.pid},
                    )
        finally:
            if process is not None:
                _kill_group(process.pid)
                await process.wait()
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
                self._watcher = None
        if process is not None:
            log.info(
                "supervised process stopped",
                extra={"child": self.name, "exit": _describe_exit(process.returncode)},
            )


@contextlib.asynccontextmanager
async def supervised(
    argv: Sequence[str], *, env: Mapping[str, str], name: str, **options: Any
) -> AsyncIterator[Supervised]:
    """`Supervised(argv, ...)` running until the block ends."""
    async with Supervised(argv, env=env, name=name, **options) as child:
        yield child


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
