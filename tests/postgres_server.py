"""A PostgreSQL server of the test's own: Debian's `postgresql` package (the Makefile installs
it), a cluster made by `initdb` in a temporary directory, on a free port of 127.0.0.1, trust
authentication, fsync off (a crash of the machine may lose data; a crash of the server, as
`stop()` makes, does not: commits stay synchronous). PostgreSQL
refuses to run as root, so when the tests are root the server runs as the `postgres` user the
package creates. A test can stop it (an immediate shutdown, the way a crashed or restarted
database goes), start it again on the same port, or freeze it (SIGSTOP to the server and its
backends: a hung database). `tests/conftest.py` shares one per test run; tests keep apart by
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

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

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
             "-c", "fsync=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the test's Ctrl-C is for pytest, not for the server
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
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
            self.thaw()
            self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP to the server and every backend: sockets stay open, nothing answers."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _pids(self) -> list[int]:
        """The postmaster and its children (each backend is a session of its own, so the
        postmaster's process group does not hold them)."""
        assert self.process is not None
        pids = [self.process.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    async def new_database(self) -> str:
        """A new, empty database of the caller's own; its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        engine = create_async_engine(
            self.url().replace("postgresql://", "postgresql+asyncpg://"),
            isolation_level="AUTOCOMMIT",  # CREATE DATABASE runs outside a transaction
            poolclass=NullPool,
        )
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            await engine.dispose()
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
        done = subprocess.run(
            command,
            capture_output=True,
            check=False,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if done.returncode != 0:
            pytest.fail(f"{Path(command[0]).name} failed: {done.stderr.decode()[-500:]}")

    @property
    def _uid(self) -> int | None:
        return None if self._owner is None else self._owner.pw_uid

    @property
    def _gid(self) -> int | None:
        return None if self._owner is None else self._owner.pw_gid

    @property
    def _groups(self) -> list[int] | None:
        return None if self._owner is None else []


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
