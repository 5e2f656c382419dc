"""`voicegw agent dev|start`: the LiveKit Agents worker, run through livekit-agents' own runner."""

from __future__ import annotations

import logging

from pipelines.contracts import Settings
from pipelines.livekit.worker import create_server


def run_agent(settings: Settings, *, dev: bool, log_level: str) -> None:
    """Run the worker until the process is told to stop."""
    # The LiveKit CLI's own worker runner (what `python -m livekit.agents start` calls): it
    # owns logging, signals and draining. We already hold the server, so we skip its
    # module discovery.
    from livekit.agents.cli import proto
    from livekit.agents.cli.cli import _run_worker

    # The runner installs its own root handler (JSON on stdout, colored in dev); drop the
    # CLI's so each line is written once. Library level caps set by the CLI stay.
    logging.getLogger().handlers.clear()
    _run_worker(
        create_server(settings),
        proto.CliArgs(log_level=log_level, dev=dev, log_format="colored" if dev else "json"),
    )
