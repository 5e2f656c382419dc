"""`voicegw`: the gateway, the agent worker and the tools around them.

Each command reads Settings once, at the edge, and hands them to the wiring that runs it. A
command imports its wiring when it runs, so `voicegw serve` starts without loading LiveKit
Agents and the lab (`bench/gateway_startup.py` measures the start).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from pipelines.contracts import MODES, ConfigError, Mode, Settings, load_settings
from pipelines.contracts.settings import TTS_PROVIDERS, TtsProvider
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


def settings_or_exit() -> Settings:
    """Settings from the environment; a bad configuration exits 2 naming every bad variable."""
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc))


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
    help="run every provider as a local simulator [default: on in dev when no provider key is set]",
)
@profile_option
def serve(host: str, port: int, simulate: bool | None, profile: str) -> None:
    """Run the gateway (session issuing, relay, page)."""
    import warnings

    import jwt

    from .serve import run_server, serve_gateway
    from .simulate import simulate_by_default

    settings = settings_or_exit()
    if simulate is None:
        simulate = simulate_by_default(settings)
    if simulate and settings.voicegw_env == "production":
        fail("--simulate is for dev; production talks to real providers")
    logging.captureWarnings(True)  # a library's warning is one more JSON line, not raw text
    # LiveKit API secrets are LiveKit's to choose (`livekit-server --dev` uses "secret"); the
    # server API client and, simulated, the LiveKit stand-in sign and verify with it.
    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
    run_server(serve_gateway(settings, host, port, profile=profile if simulate else None))


@main.command()
@click.argument("mode", type=click.Choice(["dev", "start"]))
@click.pass_context
def agent(ctx: click.Context, mode: str) -> None:
    """Run the LiveKit Agents worker (explicit dispatch under LIVEKIT_AGENT_NAME)."""
    from .agent import AgentFailed, run_agent

    log_level = str(ctx.find_root().params.get("log_level") or "INFO")
    try:
        run_agent(settings_or_exit(), dev=mode == "dev", log_level=log_level)
    except AgentFailed as exc:
        fail(f"the agent worker stopped: {exc}", 1)


@main.command()
@click.option("--mode", type=click.Choice(MODES), default="livekit", show_default=True)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="16-bit PCM WAV file of the user speaking",
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
    from .lab.audio import read_wav, write_wav
    from .lab.talk import missing_keys, render, run_talk

    settings = settings_or_exit()
    if not simulate:
        missing = missing_keys(settings, mode)
        if missing:
            click.echo(f"voicegw talk: set {', '.join(missing)} (or use --simulate)", err=True)
            sys.exit(2)
    samples, rate = read_wav(input_path)
    run = asyncio.run(
        run_talk(settings, mode, samples, rate, profile=profile if simulate else None)
    )
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
    from .lab.talk import missing_keys

    settings = settings_or_exit()
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
    result = asyncio.run(
        run_compare(
            settings,
            recordings,
            turns=turns,
            profile=profile if simulate else None,
            voices=chosen,
        )
    )
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
def launch(meeting_url: str, mode: str | None, user: str | None) -> None:
    """Create a session and the Recall.ai bot that loads its page; print the JSON result.

    Runs the same code as POST /v1/launch, in this process (no gateway needs to be running,
    but the page URL points at GATEWAY_PUBLIC_URL, so one must serve it there)."""
    from pydantic import ValidationError

    from gateway.app import Gateway
    from gateway.errors import GatewayError
    from gateway.issuer import LaunchRequest, LaunchResponse
    from pipelines.contracts.validation import describe_validation_error

    settings = settings_or_exit()
    try:
        request = LaunchRequest.model_validate(
            {"meeting_url": meeting_url, "mode": mode, "user": user}
        )
    except ValidationError as exc:
        fail(describe_validation_error(exc), 1)
    async def run() -> LaunchResponse:
        gateway = Gateway(settings)
        try:
            return await gateway.launcher.launch(request)
        finally:
            await gateway.aclose()

    try:
        result = asyncio.run(run())
    except GatewayError as exc:
        fail(exc.message, 1)
    click.echo(result.model_dump_json())


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
