"""`voicegw agent dev|start`, and the livekit half of `voicegw talk`.

They read Settings at the edge and hand explicit options to the worker and the session
factory. `agent` is registered on the `voicegw` group by gateway/cli.py, which also owns the
`talk` command (it runs either mode) and calls `talk_livekit()` for this one.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from pipelines.contracts import ConfigError, Settings, load_settings


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


async def talk_livekit(settings: Settings, samples: Any, rate: int) -> tuple[list[Any], Any, int]:
    """One conversation through the configured pipeline (`voicegw talk --mode livekit`):
    the turns' `--json` summaries, and the agent's audio with its sample rate."""
    import aiohttp

    from .session import PipelineOptions, load_vad
    from .state import RecordingPublisher
    from .talk import talk as run_talk

    options = PipelineOptions.from_settings(settings)
    async with aiohttp.ClientSession() as http:
        result = await run_talk(
            options,
            samples,
            rate,
            vad=load_vad(options.vad),
            http_session=http,
            publisher=RecordingPublisher(),
            session_id="talk",
        )
    return [turn.summary() for turn in result.turns], result.output, result.output_rate


def missing_keys(settings: Settings) -> list[str]:
    """Provider keys the livekit pipeline needs that are not set."""
    from .session import PipelineOptions

    return list(PipelineOptions.from_settings(settings).missing_keys())
