"""`voicegw`: the gateway, the agent worker and the tools around them."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import SecretStr

from pipelines.contracts import ConfigError, Settings, load_settings

from .logs import configure_logging

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

log = logging.getLogger("voicegw.cli")

PROVIDER_KEYS = ("OPENAI_API_KEY", "DEEPGRAM_API_KEY", "GROQ_API_KEY", "CHATTERBOX_API_KEY")
PROFILE_NAMES = ("published", "fast", "slow", "jittery", "instant")

profile_option = click.option(
    "--profile",
    type=click.Choice(PROFILE_NAMES),
    default="published",
    show_default=True,
    help="simulator latency profile (when simulating)",
)


def settings_or_exit() -> Settings:
    """Settings from the environment; a bad configuration exits 2 naming every bad variable."""
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"voicegw: {exc}", err=True)
        sys.exit(2)


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


def with_overrides(settings: Settings, env: dict[str, str]) -> Settings:
    """`settings` pointed at other endpoints (the simulators' known-good values)."""
    update: dict[str, Any] = {
        name.lower(): SecretStr(value) if name.endswith("_API_KEY") else value
        for name, value in env.items()
    }
    return settings.model_copy(update=update)


def simulate_by_default(settings: Settings) -> bool:
    """In dev with no provider key at all, the gateway runs on its simulators."""
    return settings.voicegw_env == "dev" and all(
        settings.value_of(name) is None for name in PROVIDER_KEYS
    )


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
    settings = settings_or_exit()
    if simulate is None:
        simulate = simulate_by_default(settings)
    if simulate and settings.voicegw_env == "production":
        click.echo("voicegw: --simulate is for dev; production talks to real providers", err=True)
        sys.exit(2)
    run_server(serve_gateway(settings, host, port, profile=profile if simulate else None))


def run_server(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop (installed with uvicorn[standard]) as `uvicorn.run` would:
    `uvicorn.Server.serve()` inside a plain `asyncio.run` gets the default asyncio loop, which
    costs the relay about a fifth more CPU per frame and a longer latency tail."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve_gateway(
    settings: Settings,
    host: str,
    port: int,
    *,
    profile: str | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> None:
    """Serve the gateway until the process is told to stop, as `voicegw serve` does (the relay
    benchmark runs it through here too). `profile` runs every provider as a simulator."""
    import contextlib

    import uvicorn

    from .app import SERVER_OPTIONS, create_app

    async with contextlib.AsyncExitStack() as stack:
        if profile is not None:
            from simulators.profiles import simulated_providers

            sims = await stack.enter_async_context(simulated_providers(profile))
            settings = with_overrides(settings, sims.env)
            log.warning(
                "SIMULATED PROVIDERS: no provider key is set, so OpenAI Realtime, Deepgram, "
                "Groq, Chatterbox and n8n are local simulators and every reply is simulated",
                extra={"profile": profile},
            )
        log.info(
            "gateway starting", extra={"host": host, "port": port, "env": settings.voicegw_env}
        )
        config = uvicorn.Config(
            create_app(settings, extra_routes=extra_routes),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            **SERVER_OPTIONS,
        )
        await uvicorn.Server(config).serve()


@main.command()
@click.option(
    "--mode", type=click.Choice(["livekit", "openai"]), default="livekit", show_default=True
)
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
    mode: str,
    input_path: Path,
    output_path: Path | None,
    as_json: bool,
    simulate: bool,
    profile: str,
) -> None:
    """One conversation from a WAV file, in either mode, with no LiveKit server."""
    from pipelines.livekit.commands import missing_keys
    from simulators.speech import read_wav, write_wav

    settings = settings_or_exit()
    if not simulate:
        missing = missing_keys(settings) if mode == "livekit" else settings.missing_for("openai")
        if missing:
            click.echo(f"voicegw talk: set {', '.join(missing)} (or use --simulate)", err=True)
            sys.exit(2)
    samples, rate = read_wav(input_path)
    turns, output, output_rate = asyncio.run(
        _talk(settings, mode, samples, rate, profile if simulate else None)
    )
    if output_path is not None:
        write_wav(output_path, output, output_rate)
    if as_json:
        click.echo(json.dumps({"mode": mode, "turns": turns}))
        return
    stages = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")
    for number, turn in enumerate(turns, 1):
        click.echo(f"turn {number}")
        click.echo(f"  user:      {turn['user_text']}")
        for call in turn["tool_calls"]:
            arguments = json.dumps(call["arguments"])
            click.echo(f"  tool:      {call['name']}({arguments}) -> {call['status']}")
        click.echo(f"  assistant: {turn['assistant_text']}")
        click.echo("  latency:   " + ", ".join(f"{s[:-3]} {_ms(turn[s])}" for s in stages))


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


async def _talk(
    settings: Settings, mode: str, samples: Any, rate: int, profile: str | None
) -> tuple[list[Any], Any, int]:
    import contextlib

    from pipelines.livekit.commands import talk_livekit
    from simulators.server import serve

    from .app import SERVER_OPTIONS, create_app
    from .talk_openai import RATE, talk_openai

    async with contextlib.AsyncExitStack() as stack:
        if profile is not None:
            from simulators.profiles import simulated_providers

            sims = await stack.enter_async_context(simulated_providers(profile))
            settings = with_overrides(settings, sims.env)
        if mode == "livekit":
            return await talk_livekit(settings, samples, rate)
        gateway = await stack.enter_async_context(serve(create_app(settings), **SERVER_OPTIONS))
        result = await talk_openai(gateway.url, samples, rate, model=settings.openai_realtime_model)
        return [turn.summary() for turn in result.turns], result.output, RATE


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
@click.option("--json", "as_json", is_flag=True, help="print the raw per-turn figures as JSON")
def compare(
    simulate: bool, profile: str, inputs: tuple[Path, ...], turns: int, as_json: bool
) -> None:
    """The same utterances through both modes: per-stage p50/p95, cost, plan criteria."""
    from .compare import load_recordings, render_table, sample_recordings

    settings = settings_or_exit()
    if not simulate:
        needed = ("DEEPGRAM_API_KEY", "GROQ_API_KEY", "CHATTERBOX_API_KEY", "OPENAI_API_KEY")
        missing = [name for name in needed if settings.value_of(name) is None]
        if missing:
            click.echo(f"voicegw: compare needs {', '.join(missing)} (or --simulate)", err=True)
            sys.exit(2)
    try:
        recordings = load_recordings(list(inputs)) if inputs else sample_recordings()
    except ValueError as exc:
        click.echo(f"voicegw: {exc}", err=True)
        sys.exit(2)
    result = asyncio.run(_compare(settings, recordings, turns, profile if simulate else None))
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(render_table(result, profile=result.get("profile")))


async def _compare(
    settings: Settings, recordings: Any, turns: int, profile: str | None
) -> dict[str, Any]:
    from .compare import run_compare

    if profile is None:
        return await run_compare(settings, recordings, turns=turns)
    from simulators.profiles import simulated_providers

    async with simulated_providers(profile, speak_replies=False) as sims:
        result = await run_compare(
            with_overrides(settings, sims.env), recordings, turns=turns, sims=sims
        )
    return {"profile": profile, **result}


@main.command()
@click.option("--meeting-url", required=True, help="the meeting the Recall.ai bot joins")
@click.option("--mode", type=click.Choice(["livekit", "openai"]), default=None)
@click.option("--user", default=None, help="user id or e-mail (allowlist, rollout key)")
def launch(meeting_url: str, mode: str | None, user: str | None) -> None:
    """Create a session and the Recall.ai bot that loads its page; print the JSON result.

    Runs the same code as POST /v1/launch, in this process (no gateway needs to be running,
    but the page URL points at GATEWAY_PUBLIC_URL, so one must serve it there)."""
    import asyncio

    from pydantic import ValidationError

    from .app import Gateway
    from .errors import ApiError
    from .sessions import LaunchRequest

    settings = settings_or_exit()
    try:
        request = LaunchRequest.model_validate(
            {"meeting_url": meeting_url, "mode": mode, "user": user}
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        click.echo(f"voicegw: {problems}", err=True)
        sys.exit(1)
    try:
        result = asyncio.run(Gateway(settings).launcher.launch(request))
    except ApiError as exc:
        click.echo(f"voicegw: {exc.message}", err=True)
        sys.exit(1)
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


from pipelines.livekit.commands import agent  # noqa: E402  (the LiveKit pipeline's worker)

main.add_command(agent)
