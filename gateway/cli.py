"""`voicegw`: the gateway, the agent worker and the tools around them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from pipelines.contracts import ConfigError, Settings, load_settings

from .logs import configure_logging

log = logging.getLogger("voicegw.cli")


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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the gateway (session issuing, relay, page)."""
    import uvicorn

    from .app import create_app

    settings = settings_or_exit()
    app = create_app(settings)
    log.info("gateway starting", extra={"host": host, "port": port, "env": settings.voicegw_env})
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, ws_max_size=16 * 1024 * 1024
    )


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


from pipelines.livekit.commands import agent, talk  # noqa: E402  (the LiveKit pipeline's commands)

main.add_command(agent)
main.add_command(talk)
