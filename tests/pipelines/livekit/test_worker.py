"""The worker's load: the share of its capacity it holds (AGENT_MAX_SESSIONS), so LiveKit stops
offering it work when it is full; the end-to-end tests show a real `start` worker report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from livekit.agents import AgentServer

from pipelines.contracts import load_settings
from pipelines.livekit.worker import SessionLoad, create_server


@dataclass
class Holding:
    """What SessionLoad reads of a worker: its running jobs."""

    active_jobs: list[object] = field(default_factory=list)


def test_the_load_is_the_share_of_the_capacity_in_use() -> None:
    load = SessionLoad(capacity=4)

    def with_jobs(count: int) -> float:
        return load(cast(AgentServer, Holding([object()] * count)))

    assert [with_jobs(n) for n in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_the_worker_reports_its_configured_capacity() -> None:
    server = create_server(load_settings({"AGENT_MAX_SESSIONS": "3"}))
    assert server.load_fnc == SessionLoad(capacity=3)
