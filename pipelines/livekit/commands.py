"""`voicegw agent dev|start` and `voicegw talk`: the click commands of the LiveKit pipeline.

They read Settings at the edge and hand explicit options to the worker and the session
factory. Registered on the `voicegw` group by gateway/cli.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipelines.contracts import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from .session import PipelineOptions


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"voicegw: {exc}", err=True)
        sys.exit(2)


def _log_level() -> str:
    root = click.get_current_context().find_root()
    return str(root.params.get("log_level") or "INFO")


@click.command()
@click.argument("mode", type=click.Choice(["dev", "start"]))
def agent(mode: str) -> None:
    """Run the LiveKit Agents worker (explicit dispatch under LIVEKIT_AGENT_NAME)."""
    # The LiveKit CLI's own worker runner (what `python -m livekit.agents start` calls): it
    # owns logging, signals and draining. We already hold the server, so we skip its
    # module discovery.
    from livekit.agents.cli import proto
    from livekit.agents.cli.cli import _run_worker

    from .worker import create_server

    dev = mode == "dev"
    # The runner installs its own root handler (JSON on stdout, colored in dev); drop the
    # CLI's so each line is written once. Library level caps set by the CLI stay.
    logging.getLogger().handlers.clear()
    _run_worker(
        create_server(_settings()),
        proto.CliArgs(log_level=_log_level(), dev=dev, log_format="colored" if dev else "json"),
    )


@click.command()
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
@click.option(
    "--simulate",
    is_flag=True,
    help="run Deepgram, Groq, Chatterbox and n8n simulators locally (offline)",
)
def talk(
    mode: str, input_path: Path, output_path: Path | None, as_json: bool, simulate: bool
) -> None:
    """One conversation from a WAV file, no LiveKit server needed."""
    if mode != "livekit":
        click.echo("voicegw talk: only --mode livekit is available in this command", err=True)
        sys.exit(2)
    from simulators.speech import read_wav, write_wav

    from .session import PipelineOptions

    settings = _settings()
    missing = PipelineOptions.from_settings(settings).missing_keys()
    if missing and not simulate:
        click.echo(f"voicegw talk: set {', '.join(missing)} (or use --simulate)", err=True)
        sys.exit(2)
    samples, rate = read_wav(input_path)
    report = asyncio.run(_talk(settings, samples, rate, output_path, simulate))
    if output_path is not None:
        write_wav(output_path, report.pop("_output"), report.pop("_output_rate"))
    else:
        report.pop("_output"), report.pop("_output_rate")
    if as_json:
        click.echo(json.dumps(report))
        return
    for number, turn in enumerate(report["turns"], 1):
        click.echo(f"turn {number}")
        click.echo(f"  user:      {turn['user_text']}")
        for call in turn["tool_calls"]:
            click.echo(
                f"  tool:      {call['name']}({json.dumps(call['arguments'])}) -> {call['status']}"
            )
        click.echo(f"  assistant: {turn['assistant_text']}")
        stages = ("eou_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")
        click.echo("  latency:   " + ", ".join(f"{s[:-3]} {_ms(turn[s])}" for s in stages))


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


async def _talk(
    settings: Settings, samples: Any, rate: int, output_path: Path | None, simulate: bool
) -> dict[str, Any]:
    import aiohttp

    from .session import PipelineOptions, load_vad
    from .state import RecordingPublisher
    from .talk import talk as run_talk

    async with contextlib.AsyncExitStack() as stack:
        options = PipelineOptions.from_settings(settings)
        if simulate:
            options = await stack.enter_async_context(_simulated(options))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        result = await run_talk(
            options,
            samples,
            rate,
            vad=load_vad(options.vad),
            http_session=http,
            publisher=RecordingPublisher(),
            session_id="talk",
        )
    return {
        "mode": "livekit",
        "turns": [turn.summary() for turn in result.turns],
        "_output": result.output,
        "_output_rate": result.output_rate,
    }


@contextlib.asynccontextmanager
async def _simulated(options: PipelineOptions) -> AsyncIterator[PipelineOptions]:
    import dataclasses

    from simulators.chatterbox import ChatterboxSimulator
    from simulators.deepgram import DeepgramSimulator
    from simulators.groq import GroqSimulator
    from simulators.n8n import N8nSimulator
    from simulators.server import serve

    deepgram, groq, chatterbox, n8n = (
        DeepgramSimulator(),
        GroqSimulator(),
        ChatterboxSimulator(),
        N8nSimulator(),
    )
    async with (
        serve(deepgram.app) as dg,
        serve(groq.app) as gq,
        serve(chatterbox.app) as cb,
        serve(n8n.app) as n8,
    ):
        yield dataclasses.replace(
            options,
            deepgram_api_key=deepgram.api_key,
            deepgram_base_url=f"{dg.url}/v1/listen",
            groq_api_key=groq.api_key,
            groq_base_url=f"{gq.url}/openai/v1",
            chatterbox_api_key=chatterbox.api_key,
            chatterbox_base_url=f"{cb.url}/v1",
            fallback_tts_base_url=None,
            n8n_webhook_base_url=n8.url,
        )
