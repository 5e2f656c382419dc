"""`voicegw agent` as a process: it starts the worker through livekit-agents' public API, logs
JSON lines like the gateway, keeps trying an unreachable LiveKit and stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
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
from urllib.parse import urlsplit

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


PROVIDER_KEYS = {
    "DEEPGRAM_API_KEY": "agent-test-deepgram-key",
    "GROQ_API_KEY": "agent-test-groq-key",
    "CHATTERBOX_API_KEY": "agent-test-chatterbox-key",
}
PREFIXES = ("LIVEKIT_", "METRICS_", "VOICE", "GATEWAY_", "OPENAI_", "N8N_", "RECALL_")


def agent_env(**env: str) -> dict[str, str]:
    """This environment without any voicegw variable, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}, **env}


@contextlib.contextmanager
def agent(mode: str, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Lines]]:
    """`voicegw agent <mode>` until the block ends."""
    with subprocess.Popen(
        [*AGENT, mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        lines = Lines(proc)
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            lines.close()


def unreachable_livekit() -> dict[str, str]:
    return {
        "LIVEKIT_URL": f"ws://127.0.0.1:{closed_port()}",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": SECRET,
        "METRICS_PORT": str(closed_port()),
    }


@pytest.fixture
def agent_dev() -> Iterator[tuple[subprocess.Popen[bytes], Lines]]:
    """`voicegw agent dev` pointed at a LiveKit that does not answer."""
    with agent("dev", agent_env(**unreachable_livekit(), **PROVIDER_KEYS)) as running:
        yield running


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
    # The agent has no gateway secret to generate: no "DEV MODE" warning about one.
    assert not [line for line in seen if "DEV MODE" in line or "GATEWAY_SECRET" in line]


def test_agent_needs_a_mode() -> None:
    result = subprocess.run([*AGENT, "run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "'dev'" in result.stderr and "'start'" in result.stderr


def test_a_production_agent_names_what_it_lacks_and_nothing_of_the_gateway() -> None:
    env = agent_env(VOICEGW_ENV="production", GROQ_API_KEY="set-groq-value")
    result = subprocess.run([*AGENT, "start"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == (
        "voicegw: invalid configuration: the agent requires LIVEKIT_URL, LIVEKIT_API_KEY, "
        "LIVEKIT_API_SECRET, DEEPGRAM_API_KEY, CHATTERBOX_API_KEY"
    )
    assert "set-groq-value" not in result.stderr


def test_a_production_agent_runs_on_livekit_and_its_providers_alone() -> None:
    """What the README gives the agent service, and nothing of the gateway's. (`dev` is the
    worker's own mode: a free health port instead of 8081, which a parallel test may hold.)"""
    env = agent_env(VOICEGW_ENV="production", **unreachable_livekit(), **PROVIDER_KEYS)
    with agent("dev", env) as (proc, lines):
        lines.wait_for('"starting worker"', within_s=60)
        livekit = json.loads(lines.wait_for('"provider": "livekit"', within_s=1))
        where = urlsplit(env["LIVEKIT_URL"]).netloc
        assert (livekit["msg"], livekit["at"]) == ("provider real", where)
        deepgram = json.loads(lines.wait_for('"provider": "deepgram"', within_s=1))
        assert (deepgram["msg"], deepgram["at"]) == ("provider real", "api.deepgram.com")
        n8n = json.loads(lines.wait_for('"provider": "n8n"', within_s=1))
        assert (n8n["msg"], n8n["missing"]) == ("provider missing", ["N8N_WEBHOOK_BASE_URL"])
        assert "tool call fails" in n8n["without_it"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    seen = lines.close()
    reported = {json.loads(line).get("provider") for line in seen} - {None}
    assert reported == {"livekit", "deepgram", "groq", "chatterbox", "n8n"}  # the agent's own
    for value in (SECRET, *PROVIDER_KEYS.values()):
        assert value not in "\n".join(seen)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"TTS_PROVIDER": "playht"}, "TTS_PROVIDER"),
        ({"SPECULATION_PAUSE_MS": "5"}, "SPECULATION_PAUSE_MS"),
        ({"SPECULATION": "always", "TTS_CHUNKS": "words"}, "SPECULATION"),
    ],
)
def test_bad_voice_or_speculation_settings_stop_the_agent_naming_them(
    bad: dict[str, str], named: str
) -> None:
    env = agent_env(**bad, CARTESIA_API_KEY="secret-cartesia-value")
    result = subprocess.run([*AGENT, "dev"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and named in result.stderr
    for name in bad:
        assert name in result.stderr  # every bad variable, not only the first
    assert "secret-cartesia-value" not in result.stderr + result.stdout
