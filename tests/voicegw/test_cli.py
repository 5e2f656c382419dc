"""`voicegw` as a process: `serve` exits 2 on a bad configuration, serves a good one (on its
simulators when no provider key is set), and schemathesis finds no server error in its OpenAPI
surface; `launch` runs the launcher in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from simulators.recall import RecallSimulator
from simulators.server import RunningServer
from tests.stack import SECRETS, gateway_env

REPO = Path(__file__).resolve().parents[2]
VOICEGW = [sys.executable, "-m", "voicegw"]
ENV = {
    "GATEWAY_SECRET": "cli-test-secret-" * 3,
    "GATEWAY_API_KEY": "cli-test-api-key",
    "OPENAI_API_KEY": "sk-cli-test",
    "OPENAI_REALTIME_URL": "ws://127.0.0.1:9/v1/realtime",  # /readyz connects: stay local
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "VOICE",
                "GATEWAY_",
                "LIVEKIT_",
                "OPENAI_",
                "N8N_",
                "DEEPGRAM_",
                "GROQ_",
                "CHATTERBOX_",
                "CARTESIA_",
                "ELEVENLABS_",
                "TTS_",
                "SPECULATION",
            )
        )
    }
    return {**base, **extra}


@contextlib.contextmanager
def running_gateway(
    env: dict[str, str], stderr: list[str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[str]:
    """`voicegw serve` until the block ends; its stderr lines go into `stderr` after it exits."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*VOICEGW, "serve", "--port", str(port), *args],
            env=clean_env(env),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"voicegw serve exited with {proc.returncode}"
                try:
                    httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "gateway did not come up in 30 s"
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.seek(0)
            if stderr is not None:
                stderr += log.read().decode().splitlines()


def test_bad_configuration_exits_2_naming_every_variable() -> None:
    result = subprocess.run(
        [*VOICEGW, "serve"],
        env=clean_env(
            {
                "VOICE_DEFAULT_MODE": "foo",
                "VOICE_LIVEKIT_ROLLOUT_PERCENT": "150",
                "GATEWAY_SECRET": "short-but-secret",
            }
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "VOICE_DEFAULT_MODE" in result.stderr
    assert "VOICE_LIVEKIT_ROLLOUT_PERCENT" in result.stderr
    assert "GATEWAY_SECRET" in result.stderr
    assert "short-but-secret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--simulate", "--voices", "chatterbox,playht"], "--voices takes chatterbox, cartesia"),
        (["--voices", "cartesia"], "CARTESIA_API_KEY"),
    ],
)
def test_compare_voices_are_checked_before_anything_runs(args: list[str], said: str) -> None:
    result = subprocess.run(
        [*VOICEGW, "compare", *args],
        env=clean_env(ENV),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert said in result.stderr


def test_production_without_secrets_refuses_to_start() -> None:
    result = subprocess.run(
        [*VOICEGW, "serve"],
        env=clean_env({"VOICEGW_ENV": "production"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "GATEWAY_API_KEY" in result.stderr


def records(lines: list[str]) -> list[dict[str, Any]]:
    """The process's log lines: every one of them a JSON object."""
    return [json.loads(line) for line in lines]


def providers_said(lines: list[str]) -> dict[str, dict[str, Any]]:
    said = [r for r in records(lines) if r["logger"] == "voicegw.providers" and "provider" in r]
    assert len(said) == len({r["provider"] for r in said}), "one line per provider"
    return {r["provider"]: r for r in said}


def test_serve_with_no_environment_runs_on_simulators_and_says_so() -> None:
    lines: list[str] = []
    with running_gateway({}, stderr=lines) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").status_code == 200  # every mode has a provider
        session = httpx.get(f"{url}/v1/session", params={"mode": "openai"}).json()
        assert session["relay"]["url"] == "/v1/realtime"
    said = [line for line in lines if "SIMULATED PROVIDERS" in line]
    assert len(said) == 1
    # One line per event that matters: of uvicorn's, only where the gateway listens.
    servers = [r["msg"] for r in records(lines) if r["logger"].startswith("uvicorn")]
    assert servers == [f"Uvicorn running on {url} (Press CTRL+C to quit)"]
    providers = providers_said(lines)
    for name in ("openai_realtime", "deepgram", "groq", "chatterbox", "n8n", "livekit"):
        assert providers[name]["msg"] == "provider simulated"
        assert providers[name]["at"].startswith("127.0.0.1:")
    assert providers["recall"]["msg"] == "provider missing"
    assert "no bot" in providers["recall"]["without_it"]


def test_one_provider_key_simulates_the_others_and_says_which() -> None:
    lines: list[str] = []
    with running_gateway({"DEEPGRAM_API_KEY": "dg-real-looking-key"}, stderr=lines) as url:
        session = httpx.get(f"{url}/v1/session", params={"mode": "openai"})
        assert session.status_code == 200, session.text  # openai is still simulated
    [rule] = [r for r in records(lines) if r["msg"].startswith("SIMULATED PROVIDERS")]
    assert rule["real"] == ["deepgram"]
    assert rule["simulated"] == [
        "cartesia",
        "chatterbox",
        "elevenlabs",
        "groq",
        "livekit",
        "n8n",
        "openai_realtime",
    ]
    assert rule["rule"] == "dev: each provider without a key"
    providers = providers_said(lines)
    assert (providers["deepgram"]["msg"], providers["deepgram"]["at"]) == (
        "provider real",
        "api.deepgram.com",
    )
    assert providers["openai_realtime"]["msg"] == "provider simulated"
    assert "dg-real-looking-key" not in "\n".join(lines)


def test_without_simulators_each_missing_provider_says_what_breaks() -> None:
    lines: list[str] = []
    env = {"OPENAI_API_KEY": "sk-real-looking", **{k: ENV[k] for k in ("OPENAI_REALTIME_URL",)}}
    with running_gateway(env, stderr=lines, args=("--no-simulate",)) as url:
        ready = httpx.get(f"{url}/readyz").json()
        livekit = httpx.get(f"{url}/v1/session", params={"mode": "livekit"})
    assert ready["modes"]["openai"]["missing"] == []
    assert not [line for line in lines if "SIMULATED PROVIDERS" in line]
    providers = providers_said(lines)
    assert (providers["openai_realtime"]["msg"], providers["openai_realtime"]["at"]) == (
        "provider real",
        "127.0.0.1:9",
    )
    for name, breaks in (("groq", "cannot answer"), ("n8n", "every tool call fails")):
        assert providers[name]["msg"] == "provider missing"
        assert breaks in providers[name]["without_it"]
    assert providers["livekit"]["credentials"] == "livekit-server --dev"
    assert livekit.status_code == 200  # the dev server's credentials
    assert "sk-real-looking" not in "\n".join(lines)


@contextlib.contextmanager
def recall_process() -> Iterator[dict[str, str]]:
    """The Recall.ai simulator in a process of its own (the gateway under test is one too);
    the variables that point a gateway at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    key = SECRETS["RECALL_API_KEY"]
    code = (
        "import uvicorn\n"
        "from simulators.recall import RecallSimulator\n"
        f"uvicorn.run(RecallSimulator(api_key={key!r}).app, fd={sock.fileno()},"
        " log_level='warning', lifespan='off')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[sock.fileno()])
    try:
        port = sock.getsockname()[1]
        yield {"RECALL_API_KEY": key, "RECALL_API_BASE": f"http://127.0.0.1:{port}"}
    finally:
        process.terminate()
        process.wait(timeout=10)
        sock.close()


def test_an_active_kill_switch_is_said_at_start_up() -> None:
    lines: list[str] = []
    with running_gateway({"VOICE_FORCE_MODE": "openai"}, stderr=lines):
        pass
    [switch] = [r for r in records(lines) if r["msg"].startswith("KILL SWITCH")]
    assert (switch["level"], switch["force_mode"]) == ("warning", "openai")
    [routing] = [r for r in records(lines) if r["msg"] == "routing"]
    assert routing["force_mode"] == "openai"


def test_a_port_in_use_is_said_first_and_alone() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*VOICEGW, "serve", "--port", str(port)],
            env=clean_env({}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"voicegw: cannot listen on 127.0.0.1:{port}: address already in use "
        "(is another voicegw serve running? --port picks another)"
    ]


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["agent", "dev"]])
def test_a_data_dir_that_cannot_hold_the_history_is_said_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("")
    env = {"VOICEGW_DATA_DIR": str(taken / "data")}
    if command[0] == "agent":
        env.update(DEEPGRAM_API_KEY="dg", GROQ_API_KEY="gsk", CHATTERBOX_API_KEY="cb")
    result = subprocess.run(
        [*VOICEGW, *command], env=clean_env(env), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("voicegw:")]
    assert line.startswith("voicegw: invalid configuration: VOICEGW_DATA_DIR: cannot make")
    assert "Traceback" not in result.stderr


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    if not schemathesis.exists():
        pytest.fail("schemathesis is a dev dependency; run `make test` to install it")
    # With Recall.ai reachable: the schema's meeting_url is an https URL, so generated launches
    # get past validation to the bot (without Recall they would be a documented 503).
    with recall_process() as recall, running_gateway({**ENV, **recall}) as url:
        result = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance",
                "--max-examples",
                "40",
                "--seed",
                "1",
                "--no-color",
                "-H",
                f"Authorization: Bearer {ENV['GATEWAY_API_KEY']}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout[-4000:]


TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"


async def test_cli_launch_runs_the_same_code_in_process(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        **gateway_env(RECALL_API_BASE=recall_server.url),
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
    }
    code, out, err = await _voicegw(
        env, "launch", "--meeting-url", TEAMS, "--mode", "openai", "--user", "bo@example.com"
    )
    assert code == 0, err
    result = json.loads(out)
    [bot] = recall.bots
    assert result["bot_id"] == bot.id
    assert (result["mode"], result["reason"]) == ("openai", "url_flag")
    assert result["page_url"].startswith("https://gw.example.com/?")
    assert bot.body["output_media"]["camera"]["config"]["url"] == result["page_url"]
    for value in SECRETS.values():
        assert value not in out + err

    assert "warning" not in err  # a public https page: nothing to say

    code, out, err = await _voicegw(env, "launch", "--meeting-url", "not a url")
    assert code == 1
    assert out == ""
    assert "meeting_url must be an absolute https URL" in err
    assert len(recall.bots) == 1


async def test_cli_launch_in_dev_refuses_a_secret_of_its_own(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    """A dev process would sign the launch token with a temporary secret of its own, which
    the running gateway refuses: it says so instead, and no bot is created."""
    env = {"PATH": os.environ.get("PATH", ""), **gateway_env(RECALL_API_BASE=recall_server.url)}
    del env["GATEWAY_SECRET"]
    code, out, err = await _voicegw(env, "launch", "--meeting-url", TEAMS)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert "GATEWAY_SECRET is not set" in line and "--gateway URL" in line
    assert recall.bots == []


async def test_cli_launch_through_the_running_gateway_makes_a_page_it_accepts(
    recall: RecallSimulator, recall_server: RunningServer
) -> None:
    served = {
        **{k: v for k, v in SECRETS.items() if k != "GATEWAY_SECRET"},  # dev: its own secret
        "RECALL_API_BASE": recall_server.url,
        "OPENAI_API_KEY": "sk-cli-test",
    }
    client_env = {"PATH": os.environ.get("PATH", ""), "GATEWAY_API_KEY": SECRETS["GATEWAY_API_KEY"]}
    with running_gateway(served) as url:
        code, out, err = await _voicegw(
            client_env, "launch", "--gateway", url, "--meeting-url", TEAMS, "--mode", "openai"
        )
        assert code == 0, err
        result = json.loads(out)
        [bot] = recall.bots
        assert result["bot_id"] == bot.id
        launch = parse_qs(urlsplit(result["page_url"]).query)["launch"][0]
        async with httpx.AsyncClient(base_url=url) as client:
            session = await client.get("/v1/session", params={"launch": launch})
        assert session.status_code == 200, session.text
        assert session.json()["session_id"] == result["session_id"]

        # The page is this machine's, over http: Recall.ai can neither reach it nor give it a
        # microphone, and the warning says both (without the launch token).
        [warning] = err.splitlines()
        assert "warning" in warning and "Recall.ai cannot reach 127.0.0.1" in warning
        assert "no microphone" in warning and "GATEWAY_PUBLIC_URL" in warning
        assert launch not in warning

        # The gateway's own refusal comes back, and a wrong key is not echoed.
        wrong = {**client_env, "GATEWAY_API_KEY": "not-the-key"}
        code, out, err = await _voicegw(wrong, "launch", "--gateway", url, "--meeting-url", TEAMS)
        assert (code, out) == (1, "")
        assert "the gateway refused (401 unauthorized)" in err and "not-the-key" not in err
    code, _, err = await _voicegw(
        client_env, "launch", "--gateway", "http://gw.example.com", "--meeting-url", TEAMS
    )
    assert code == 1 and "--gateway must be https" in err


async def _voicegw(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "voicegw"),
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
