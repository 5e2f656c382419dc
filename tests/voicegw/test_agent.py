"""`voicegw agent` as a process: it starts the worker through livekit-agents' public API, logs
JSON lines like the gateway, keeps trying an unreachable LiveKit and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

AGENT = [sys.executable, "-m", "voicegw", "agent"]
SECRET = "agent-test-livekit-secret-" * 2


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lines:
    """The process's stderr, line by line, read on a thread; `wait_for` has a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            with self._changed:
                self.lines.append(raw.decode().rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, needle: str, within_s: float) -> str:
        deadline = time.monotonic() + within_s
        with self._changed:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"no {needle!r} within {within_s} s; stderr:\n" + "\n".join(
                    self.lines[-20:]
                )
                self._changed.wait(left)

    def close(self) -> list[str]:
        self._thread.join(10)
        return self.lines


@pytest.fixture
def agent_dev() -> Iterator[tuple[subprocess.Popen[bytes], Lines]]:
    """`voicegw agent dev` pointed at a LiveKit that does not answer."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "METRICS_"))},
        "LIVEKIT_URL": f"ws://127.0.0.1:{closed_port()}",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": SECRET,
        "METRICS_PORT": str(closed_port()),
    }
    with subprocess.Popen(
        [*AGENT, "dev"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        lines = Lines(proc)
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            lines.close()


def test_agent_starts_retries_an_unreachable_livekit_and_stops_on_sigterm(
    agent_dev: tuple[subprocess.Popen[bytes], Lines],
) -> None:
    proc, lines = agent_dev
    lines.wait_for('"starting worker"', within_s=60)
    retry = json.loads(lines.wait_for("failed to connect to livekit", within_s=30))
    assert retry["level"] == "warning" and retry["logger"] == "livekit.agents"
    assert "127.0.0.1" in retry["error"]  # says where it tried, not with which secret

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    seen = lines.close()
    stopping = json.loads(next(line for line in seen if '"agent stopping"' in line))
    assert stopping["signal"] == "SIGTERM"
    assert any('"shutting down worker"' in line for line in seen)
    # every line is one JSON object in the gateway's shape, and stdout stays empty
    for line in seen:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(entry), line
    assert proc.stdout is not None and proc.stdout.read() == b""
    assert SECRET not in "\n".join(seen)


def test_agent_needs_a_mode() -> None:
    result = subprocess.run([*AGENT, "run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "'dev'" in result.stderr and "'start'" in result.stderr


def test_agent_without_a_livekit_url_exits_1_saying_so() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "VOICE"))},
        "VOICEGW_ENV": "production",  # no dev defaults: LIVEKIT_URL stays unset
        "VOICE_FORCE_MODE": "openai",
        "GATEWAY_SECRET": "agent-test-gateway-secret-" * 2,
        "GATEWAY_API_KEY": "agent-test-api-key",
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
        "OPENAI_API_KEY": "sk-agent-test",
        "METRICS_PORT": str(closed_port()),
    }
    result = subprocess.run([*AGENT, "start"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "voicegw: the agent worker stopped" in result.stderr
    assert "LIVEKIT_URL" in result.stderr.splitlines()[-1]
