"""A network namespace of the test's own, for WebRTC.

libwebrtc (Chromium, the Python `livekit` rtc SDK) never gathers an ICE candidate on the
loopback interface, and aioice (aiortc) leaves 127.0.0.1 out too; media between two processes
on one machine therefore needs an interface that is not loopback. The tests must not use the
machine's outside interface, so a test makes a namespace with a veth pair of its own (this
kernel has no `dummy` link type; both ends stay inside the namespace) and one private address,
10.213.<n>.1/24. Inside it the candidates on both sides are that address and the traffic never
leaves the namespace. IPv6 is switched off in it, so nobody gathers a link-local address.

Two ways in:

- `NetNamespace.entered()` moves the calling thread into the namespace (setns(2)) and back.
  Sockets made while inside stay in the namespace; threads and processes started while inside
  are born in it. An async test enters on the event loop's thread, starts the stand-in, the
  servers and subprocesses, and they all meet at `address` or 127.0.0.1 (the namespace's own
  loopback serves signalling well; only media needs `address`).
- `NetNamespace.command(argv)` prefixes `ip netns exec <name>` for a process started from
  outside (a Playwright-launched Chromium, say, via `wrapper_script`).

Needs root and iproute2 (`make system-deps` installs it).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

_CLONE_NEWNET = 0x40000000
_numbers = itertools.count(1)


class NetNamespace:
    """A namespace `vgt<pid>n<k>` with lo up and a veth pair holding `address`/24."""

    def __init__(self) -> None:
        number = next(_numbers)
        self.name = f"vgt{os.getpid()}n{number}"
        self.address = f"10.213.{number % 250 + 1}.1"
        self._created = False

    def create(self) -> NetNamespace:
        _ip("netns", "add", self.name)
        self._created = True
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "link", "add", "vgt0", "type", "veth", "peer", "name", "vgt1")
            _ip("-n", self.name, "addr", "add", f"{self.address}/24", "dev", "vgt0")
            _ip("-n", self.name, "link", "set", "vgt0", "up")
            _ip("-n", self.name, "link", "set", "vgt1", "up")
            subprocess.run(
                [*self.command(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])],
                check=True,
                capture_output=True,
            )
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        if self._created:
            self._created = False
            subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def wrapper_script(self, directory: Path, executable: str) -> Path:
        """An executable file that runs `executable` (with its arguments) in the namespace,
        for launchers that take a path (Playwright's `executable_path`)."""
        path = directory / f"{Path(executable).name}-in-{self.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {executable} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the calling thread inside the namespace for the block."""
        libc = ctypes.CDLL(None, use_errno=True)
        with (
            open("/proc/thread-self/ns/net", "rb") as home,
            open(f"/run/netns/{self.name}", "rb") as target,
        ):
            _setns(libc, target.fileno())
            try:
                yield
            finally:
                _setns(libc, home.fileno())


def _setns(libc: ctypes.CDLL, fd: int) -> None:
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns failed: {os.strerror(errno)}")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def require_netns() -> None:
    """The namespace tests do not skip: `make test` runs as root with iproute2 installed."""
    if shutil.which("ip") is None:
        pytest.fail("iproute2 is missing: run `make system-deps` (make test does)")
    if os.geteuid() != 0:
        pytest.fail("network namespace tests need root (setns, ip netns add)")


@pytest.fixture(scope="module")
def netns() -> Iterator[NetNamespace]:
    """A namespace for the module's tests, deleted afterwards."""
    require_netns()
    namespace = NetNamespace().create()
    try:
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture
def in_netns(netns: NetNamespace) -> Iterator[NetNamespace]:
    """The test's thread runs inside `netns` (so does everything it starts)."""
    with netns.entered():
        yield netns
