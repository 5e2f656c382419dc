"""`make run`'s livekit mode: `voicegw serve` with no environment at all (as `make run` starts
it) serves the LiveKit stand-in and supervises one agent worker on the simulated providers, so
`/?mode=livekit` in Chromium holds a spoken conversation through the room, labelled
"(simulated)". A worker that dies is restarted and logged; the gateway stops it when it stops;
no log line of either process carries a token.

The process runs in the module's network namespace (`ip netns exec`), Chromium too: on a
user's machine both use its own non-loopback interface for media; here they must not.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import PageLog, wait_for
from tests.netns import NetNamespace
from tests.voicegw.test_agent import Lines

from .room import audible_seconds, speak_when_the_agent_is_there

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.browser]

PORT = 8080  # make run's; the namespace is the test's own
JWT = re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,}")
ANSWERED = (
    "window.voicePage && window.voicePage.transcript.some(l => l.role === 'assistant'"
    " && l.final && l.text.startsWith('(simulated) You said:'))"
    " && document.body.dataset.state === 'listening'"
)


@pytest.fixture(scope="module")
def served(netns: NetNamespace) -> Iterator[tuple[subprocess.Popen[bytes], Lines]]:
    """`voicegw serve` as `make run` runs it, in the namespace, with nobody's environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("VOICE", "GATEWAY_", "LIVEKIT_", "OPENAI_", "DEEPGRAM_", "GROQ_", "CHATTERBOX_")
        )
    }
    command = [sys.executable, "-m", "voicegw", "serve", "--port", str(PORT)]
    with subprocess.Popen(
        netns.command(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        lines = Lines(process)
        try:
            lines.wait_for('"Uvicorn running on', within_s=60)
            lines.wait_for('"registered worker"', within_s=60)
            yield process, lines
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            lines.close()


def records(lines: Lines) -> list[dict[str, Any]]:
    """Every line both processes logged, as JSON (every one must be)."""
    return [json.loads(line) for line in list(lines.lines)]


def wait_for_count(lines: Lines, msg: str, count: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while sum(r["msg"] == msg for r in records(lines)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {msg!r} lines in {within_s} s"
        time.sleep(0.05)


def test_livekit_mode_holds_a_simulated_conversation_under_make_run(
    served: tuple[subprocess.Popen[bytes], Lines], page: Page, page_log: PageLog
) -> None:
    _, lines = served
    simulated = json.loads(lines.wait_for('"SIMULATED PROVIDERS', within_s=1))
    assert "livekit" in simulated["simulated"]
    [livekit] = [
        r for r in records(lines) if r["msg"] == "provider simulated" and r["provider"] == "livekit"
    ]
    assert livekit["at"].startswith("127.0.0.1:")  # the stand-in, in the gateway's process

    page.goto(f"http://127.0.0.1:{PORT}/?session=mr1&mode=livekit")
    speak_when_the_agent_is_there(page, page_log)
    wait_for(page, ANSWERED, timeout_s=60, log=page_log)
    lines_shown = page.evaluate("window.voicePage.transcript")
    assert [line["role"] for line in lines_shown] == ["user", "assistant"]
    assert all(line["text"].startswith("(simulated)") for line in lines_shown)
    assert "(simulated)" in page.locator("#transcript").inner_text()
    assert page.evaluate("document.body.dataset.mode") == "livekit"
    assert page.evaluate("document.body.dataset.fallbackReason") == ""
    assert audible_seconds(page) > 0.5
    # The room, its dispatch and the worker's job, as both processes logged them.
    lines.wait_for('"job started"', within_s=1)
    assert any(r["msg"] == "room created" and r["room"] == "meeting_mr1" for r in records(lines))


def test_a_dead_worker_is_restarted_and_the_gateway_stops_it_with_itself(
    served: tuple[subprocess.Popen[bytes], Lines],
) -> None:
    process, lines = served
    [started] = [r for r in records(lines) if r["msg"] == "supervised process started"]
    os.killpg(started["pid"], signal.SIGKILL)

    restarted = json.loads(lines.wait_for('"supervised process exited, restarting"', within_s=15))
    assert (restarted["child"], restarted["exit"]) == ("agent worker", "signal SIGKILL")
    wait_for_count(lines, "registered worker", 2, within_s=60)  # the new worker is in service
    [second] = [
        r for r in records(lines) if r["msg"] == "supervised process started" and r["starts"] == 2
    ]

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) in (0, -signal.SIGTERM)
    seen = lines.close()
    stopped = [json.loads(line) for line in seen if '"supervised process stopped"' in line]
    assert [s["exit"] for s in stopped] == ["exit code 0"]
    with pytest.raises(ProcessLookupError):
        os.killpg(second["pid"], 0)  # the worker and its job processes are gone

    # No token in any line the gateway, the stand-in or the worker logged.
    for line in seen:
        assert not JWT.search(line), line
        assert "access_token=" not in line or "access_token=<redacted>" in line, line
