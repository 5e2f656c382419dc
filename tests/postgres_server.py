"""A PostgreSQL server of the test's own: Debian's `postgresql` package (the Makefile installs
it), a cluster made by `initdb` in a temporary directory, on a free port of 127.0.0.1, trust
authentication, no durability (fsync off: the tests want speed, not crash safety). PostgreSQL
refuses to run as root, so when the tests are root the server runs as the `postgres` user the
package creates. A test can stop it (an immediate shutdown, the way a crashed or restarted
database goes), start it again on the same port, or freeze it (SIGSTOP to every process of
the server: a hung database). `tests/conftest.py` shares one per test run; tests keep apart by
database (`new_database`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.redis_server import free_port

START_TIMEOUT_S = 30.0
_USER = "postgres"


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run `make system-deps`")
    return found[-1]


class PostgresServer:
    """One PostgreSQL cluster and its server process; `url` stays the same across `stop()`
    and `start()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="voicegw-pg-"))
        self._data = self._root / "data"
        self._sockets = self._root / "sockets"
        self._owner = pwd.getpwnam(_USER) if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        self._sockets.mkdir()
        if self._owner is not None:
            for path in (self._root, self._sockets):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        self._run(
            [_binary("initdb"), "-D", str(self._data), "-U", _USER, "-A", "trust", "--no-sync",
             "-E", "UTF8", "--locale", "C"],
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [_binary("postgres"), "-D", str(self._data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self._sockets}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: freeze() stops every backend
            **self._as_owner(),
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._accepting():
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail("postgres did not accept connections in time")
            time.sleep(0.05)

    def stop(self) -> None:
        """An immediate shutdown (SIGQUIT): every connection is cut at once, nothing is
        flushed; the next start recovers from the log."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP to the server's whole process group: sockets stay open, nothing answers."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    async def new_database(self) -> str:
        """A new, empty database of the caller's own; its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        connection = await asyncpg.connect(self.url(), timeout=10)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)

    def _accepting(self) -> bool:
        ready = subprocess.run(
            [_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return ready.returncode == 0

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, check=False, **self._as_owner())
        if done.returncode != 0:
            pytest.fail(f"{Path(command[0]).name} failed: {done.stderr.decode()[-500:]}")

    def _as_owner(self) -> dict[str, object]:
        if self._owner is None:
            return {}
        return {"user": self._owner.pw_uid, "group": self._owner.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
