"""`voicegw`: the gateway, the agent worker and the tools around them.

Each command reads Settings once, at the edge, and hands them to the wiring that runs it. A
command imports its wiring when it runs, so `voicegw serve` starts without loading LiveKit
Agents and the lab (`bench/gateway_startup.py` measures the start).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from pipelines.contracts import MODES, ConfigError, Mode, Settings, load_settings
from pipelines.contracts.settings import TTS_PROVIDERS, Process, TtsProvider
from simulators.profiles import PROFILES

from .logs import configure_logging

profile_option = click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    default="published",
    show_default=True,
    help="simulator latency profile (when simulating)",
)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"voicegw: {message}", err=True)
    sys.exit(code)


def history_problem(settings: Settings) -> None:
    """Refuse to start, in one line, where the history cannot be kept."""
    from history.database import unusable_data_dir

    problem = unusable_data_dir(settings)
    if problem:
        fail(f"invalid configuration: {problem}")


def settings_or_exit(process: Process = "gateway", *, dev_defaults: bool = True) -> Settings:
    """Settings from the environment; a bad configuration exits 2 naming every bad variable."""
    try:
        return load_settings(process=process, dev_defaults=dev_defaults)
    except ConfigError as exc:
        fail(str(exc))


def cannot_listen(host: str, port: int) -> str | None:
    """Why the gateway could not listen on host:port (None when it can), found before anything
    starts: uvicorn would say so only after every simulator has. Bound as uvicorn binds
    (SO_REUSEADDR), then released."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except socket.gaierror:
        return "the host name does not resolve"
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else "it is not available"
        if exc.errno == errno.EADDRINUSE:
            why += " (is another voicegw serve running? --port picks another)"
        return why
    return None


@click.group()
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def main(log_level: str) -> None:
    """voice-gateway: a meeting voice agent on LiveKit or OpenAI Realtime."""
    configure_logging(log_level)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--simulate/--no-simulate",
    default=None,
    help="run every provider as a local simulator, or none "
    "[default: in dev, each provider without a key]",
)
@profile_option
def serve(host: str, port: int, simulate: bool | None, profile: str) -> None:
    """Run the gateway (session issuing, relay, page)."""
    import warnings

    import jwt

    from .providers import to_simulate
    from .serve import run_server, serve_gateway

    busy = cannot_listen(host, port)
    if busy:
        fail(f"cannot listen on {host}:{port}: {busy}")
    settings = settings_or_exit()
    if simulate and settings.voicegw_env == "production":
        fail("--simulate is for dev; production talks to real providers")
    history_problem(settings)
    logging.captureWarnings(True)  # a library's warning is one more JSON line, not raw text
    # LiveKit API secrets are LiveKit's to choose (`livekit-server --dev` uses "secret"); the
    # server API client and, simulated, the LiveKit stand-in sign and verify with it.
    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
    simulated = to_simulate(settings, simulate)
    run_server(
        serve_gateway(
            settings,
            host,
            port,
            profile=profile if simulated else None,
            simulated=None if simulate else simulated,
        )
    )


@main.command()
@click.argument("mode", type=click.Choice(["dev", "start"]))
@click.pass_context
def agent(ctx: click.Context, mode: str) -> None:
    """Run the LiveKit Agents worker (explicit dispatch under LIVEKIT_AGENT_NAME)."""
    from .agent import AgentFailed, missing_for_agent, run_agent

    log_level = str(ctx.find_root().params.get("log_level") or "INFO")
    settings = settings_or_exit("agent")
    missing = missing_for_agent(settings)
    if missing:
        fail(f"invalid configuration: the agent requires {', '.join(missing)}")
    history_problem(settings)
    try:
        run_agent(settings, dev=mode == "dev", log_level=log_level)
    except AgentFailed as exc:
        fail(f"the agent worker stopped: {exc}", 1)


@main.command()
@click.option("--mode", type=click.Choice(MODES), default="livekit", show_default=True)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="WAV file of the user speaking (any sample format, channels and rate)",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the agent's audio here (WAV, on the input's timeline)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--simulate", is_flag=True, help="run every provider as a local simulator")
@profile_option
def talk(
    mode: Mode,
    input_path: Path,
    output_path: Path | None,
    as_json: bool,
    simulate: bool,
    profile: str,
) -> None:
    """One conversation from a WAV file, in either mode, with no LiveKit server."""
    from .lab.audio import AudioFileError, check_output, read_speech, write_wav
    from .lab.progress import Progress
    from .lab.talk import missing_keys, render, run_talk
    from .lab.turns import TalkRun

    settings = settings_or_exit("lab")
    if not simulate:
        missing = missing_keys(settings, mode)
        if missing:
            click.echo(f"voicegw talk: set {', '.join(missing)} (or use --simulate)", err=True)
            sys.exit(2)
    try:  # everything that can be wrong with the files, before any work
        samples, rate, utterances = read_speech(input_path)
        if output_path is not None:
            check_output(output_path)
    except AudioFileError as exc:
        fail(str(exc))
    progress = Progress("talk", total=len(utterances))

    async def conversation() -> TalkRun:
        async with progress.shown():
            return await run_talk(
                settings,
                mode,
                samples,
                rate,
                profile=profile if simulate else None,
                on_turn=progress.turn,
            )

    run = asyncio.run(conversation())
    if output_path is not None:
        write_wav(output_path, run.output, run.output_rate)
    if as_json:
        click.echo(run.result.model_dump_json())
    elif run.turns:
        click.echo(render(run.turns))


@main.command()
@click.option("--simulate", is_flag=True, help="measure against local simulators (offline)")
@profile_option
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="a WAV file or a directory of them; repeatable [default: the shipped samples]",
)
@click.option("--turns", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--voices",
    default=None,
    help=f"livekit once per voice, comma-separated ({','.join(TTS_PROVIDERS)}) "
    "[default: TTS_PROVIDER]",
)
@click.option("--json", "as_json", is_flag=True, help="print the raw per-turn figures as JSON")
def compare(
    simulate: bool,
    profile: str,
    inputs: tuple[Path, ...],
    turns: int,
    voices: str | None,
    as_json: bool,
) -> None:
    """The same utterances through both modes: per-stage p50/p95, cost, plan criteria."""
    from .lab.compare import compare as run_compare
    from .lab.compare import load_recordings, render_table, sample_recordings
    from .lab.progress import Progress
    from .lab.talk import missing_keys

    settings = settings_or_exit("lab")
    chosen = _voices(voices)
    if not simulate:
        missing = [key for mode in MODES for key in missing_keys(settings, mode)]
        for voice in chosen or []:
            key = f"{voice.upper()}_API_KEY"
            if settings.value_of(key) is None and key not in missing:
                missing.append(key)
        if missing:
            fail(f"compare needs {', '.join(missing)} (or --simulate)")
    try:
        recordings = load_recordings(list(inputs)) if inputs else sample_recordings()
    except ValueError as exc:
        fail(str(exc))
    lanes = 1 + (len(chosen) if chosen else 1)  # openai, and livekit once per voice
    progress = Progress("compare", total=turns * lanes)

    async def measured() -> dict[str, Any]:
        async with progress.shown():
            return await run_compare(
                settings,
                recordings,
                turns=turns,
                profile=profile if simulate else None,
                voices=chosen,
                on_turn=progress.turn,
            )

    result = asyncio.run(measured())
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(render_table(result, profile=result.get("profile")))


def _voices(value: str | None) -> list[TtsProvider] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in TTS_PROVIDERS]
    if unknown or not names:
        fail(f"--voices takes {', '.join(TTS_PROVIDERS)} (comma-separated)")
    return [voice for name in dict.fromkeys(names) for voice in TTS_PROVIDERS if voice == name]


@main.command()
@click.option("--meeting-url", required=True, help="the meeting the Recall.ai bot joins")
@click.option("--mode", type=click.Choice(MODES), default=None)
@click.option("--user", default=None, help="user id or e-mail (allowlist, rollout key)")
@click.option(
    "--gateway",
    "gateway_url",
    default=None,
    metavar="URL",
    help="have the running gateway at URL launch (POST /v1/launch with GATEWAY_API_KEY)",
)
def launch(meeting_url: str, mode: str | None, user: str | None, gateway_url: str | None) -> None:
    """Create a session and the Recall.ai bot that loads its page; print the JSON result.

    With --gateway, the running gateway launches, and the page URL is one it accepts. Without
    it, this process runs the same code as POST /v1/launch, signing the launch token with
    GATEWAY_SECRET, which must then be the running gateway's (refused when unset)."""
    from pydantic import ValidationError

    from gateway.errors import GatewayError
    from gateway.issuer import LaunchRequest
    from gateway.launcher import page_problems
    from pipelines.contracts.validation import describe_validation_error

    from .launch import NO_SECRET, LaunchFailed, check_gateway_url, launch_local, launch_remote

    try:
        request = LaunchRequest.model_validate(
            {"meeting_url": meeting_url, "mode": mode, "user": user}
        )
    except ValidationError as exc:
        fail(describe_validation_error(exc), 1)
    try:
        if gateway_url is not None:
            gateway_url = check_gateway_url(gateway_url)
            settings = settings_or_exit("client")
            if settings.gateway_api_key is None:
                fail("--gateway needs GATEWAY_API_KEY, the running gateway's API key")
            api_key = settings.gateway_api_key.get_secret_value()
            result = launch_remote(gateway_url, api_key, request)
        else:
            settings = settings_or_exit(dev_defaults=False)
            if settings.gateway_secret is None:
                fail(NO_SECRET)
            _warn_about_page(page_problems(settings.page_url), settings.page_url)
            result = asyncio.run(launch_local(settings, request))
    except LaunchFailed as exc:
        fail(str(exc), 1)
    except GatewayError as exc:
        fail(exc.message, 1)
    if gateway_url is not None:
        page = result.page_url.split("?", 1)[0]
        _warn_about_page(page_problems(page), page)
    click.echo(result.model_dump_json())


def _warn_about_page(problems: list[str], page: str) -> None:
    """Say, before the bot is sent there when we can, why the page will not work in it."""
    if problems:
        click.echo(
            f"voicegw launch: warning: the page {page} will not work in the meeting: "
            + "; ".join(problems)
            + ". Serve it over https at a public address (GATEWAY_PUBLIC_URL, or "
            "GATEWAY_PAGE_URL for a page hosted elsewhere)",
            err=True,
        )


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="directory (default: client-config/schemas)",
)
def schemas(out: Path | None) -> None:
    """Write the JSON Schemas of the contract for the page."""
    from pipelines.contracts.schemas import SCHEMA_DIR, write_schemas

    for path in write_schemas(out or SCHEMA_DIR):
        click.echo(str(path))


@main.command()
@click.option("--since", help="started at or after: an age (7d, 24h, 30m) or an ISO 8601 time")
@click.option("--until", help="started before: an age or an ISO 8601 time")
@click.option("--mode", type=click.Choice(MODES), help="the mode first issued")
@click.option("--reason", help="the routing rule that chose the mode (rollout, allowlist, ...)")
@click.option("--user", help="the user (case-insensitive)")
@click.option("--fell-back/--no-fell-back", "fell_back", default=None, help="fell back or not")
@click.option(
    "--tool-error/--no-tool-error", "tool_error", default=None, help="had a tool error or not"
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json", "jsonl", "csv"]),
    default="table",
    show_default=True,
    help="jsonl and csv export every matching session (a session: its turns)",
)
@click.option("--session", "session_id", help="one session's turns and tool calls")
@click.option(
    "--compare",
    is_flag=True,
    help="per mode: sessions, fallback rate, tool error rate, voice-to-voice p50/p95",
)
def history(
    since: str | None,
    until: str | None,
    mode: str | None,
    reason: str | None,
    user: str | None,
    fell_back: bool | None,
    tool_error: bool | None,
    limit: int,
    output: str,
    session_id: str | None,
    compare: bool,
) -> None:
    """Read the session history (DATABASE_URL, else the SQLite file under VOICEGW_DATA_DIR)."""
    from sqlalchemy.exc import DBAPIError

    from .history_cli import HistoryQueryError, parse_filters, run_history

    settings = settings_or_exit(dev_defaults=False)

    def flag(value: bool | None) -> str | None:
        return None if value is None else str(value).lower()

    try:
        where = parse_filters(
            {
                "since": since,
                "until": until,
                "mode": mode,
                "reason": reason,
                "user": user,
                "fell_back": flag(fell_back),
                "tool_error": flag(tool_error),
            }
        )
        asyncio.run(
            run_history(
                settings,
                where,
                write=lambda text: click.echo(text, nl=False),
                output=output,  # type: ignore[arg-type]  # click.Choice of Output's values
                limit=limit,
                session_id=session_id,
                compare=compare,
            )
        )
    except HistoryQueryError as exc:
        fail(str(exc))
    except (DBAPIError, OSError) as exc:
        # By type: a driver's message can carry the connection string.
        fail(f"the history database cannot be read ({type(exc).__name__})", 1)
