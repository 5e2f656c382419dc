"""`Supervised`: a child process restarted with a log line when it dies, backing off while it
keeps failing, stopped (with everything it started) when the block ends. The children are tiny
Python programs; the end-to-end tests run the real agent worker under it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from voicegw.supervise import Supervised

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# A child that starts a grandchild in its own process group (as the worker starts its job
# processes), writes the grandchild's pid to the file it is given, and sleeps.
PARENT = (
    "import pathlib, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "pathlib.Path(sys.argv[1]).write_text(str(child.pid))\n"
    "time.sleep(120)\n"
)


async def wait_until(condition: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers; it is gone as far as we care once reaped or defunct.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


async def test_a_child_that_dies_is_restarted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voicegw.supervise")
    async with Supervised(SLEEPER, env=dict(os.environ), name="sleeper") as child:
        first = child.pid
        assert first is not None and child.starts == 1
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: child.starts == 2 and child.pid not in (None, first))
        second = child.pid
    messages = [(r.msg, r.__dict__.get("exit")) for r in caplog.records]
    assert ("supervised process exited, restarting", "signal SIGKILL") in messages
    assert messages[-1] == ("supervised process stopped", "signal SIGTERM")
    assert second is not None and not alive(second)


async def test_stopping_takes_the_whole_process_group(tmp_path: Path) -> None:
    written = tmp_path / "grandchild.pid"
    child = Supervised(
        [sys.executable, "-c", PARENT, str(written)], env=dict(os.environ), name="parent"
    )
    async with child:
        await wait_until(lambda: written.exists() and written.read_text() != "")
        grandchild = int(written.read_text())
        assert alive(grandchild)
    # SIGTERM ended the child; its grandchild, which a SIGTERM to the child alone would have
    # left running, went with the group.
    await wait_until(lambda: not alive(grandchild))
    assert child.pid is None


async def test_quick_failures_back_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicegw.supervise")
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    child = Supervised(
        failing, env=dict(os.environ), name="failing", first_delay_s=0.01, max_delay_s=0.04
    )
    async with child:
        await wait_until(lambda: child.starts >= 5)
    delays = [r.__dict__["restart_in_s"] for r in caplog.records if "restart_in_s" in r.__dict__]
    assert delays[:4] == [0.01, 0.02, 0.04, 0.04]
    assert {r.__dict__["exit"] for r in caplog.records if "restart_in_s" in r.__dict__} == {
        "exit code 3"
    }


async def test_a_one_shot_child_is_not_restarted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicegw.supervise")
    quick = [sys.executable, "-c", "raise SystemExit(3)"]
    async with Supervised(quick, env=dict(os.environ), name="once", restart=False) as child:
        await wait_until(lambda: any(r.msg == "supervised process exited" for r in caplog.records))
        assert child.starts == 1 and child.pid is None
    [ended] = [r for r in caplog.records if r.msg == "supervised process exited"]
    assert ended.__dict__["exit"] == "exit code 3"
