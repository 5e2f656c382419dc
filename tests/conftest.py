"""Shared fixtures. Every async test fails if it leaves an asyncio task behind."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from simulators.n8n import N8nSimulator
from simulators.server import RunningServer, serve


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "_no_leaked_tasks")


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        # Give tasks that are already finishing one loop turn, then insist.
        await asyncio.sleep(0)
        leaked = [t for t in leaked if not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"leaked asyncio tasks: {[t.get_coro() for t in leaked]}"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that run `voicegw` in-process (CliRunner) configure logging for the whole
    process; put it back so no test depends on which ran before it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {name: logging.getLogger(name) for name in logging.root.manager.loggerDict}
    saved = {name: (lg.level, lg.disabled) for name, lg in named.items()}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (lg_level, disabled) in saved.items():
        named[name].setLevel(lg_level)
        named[name].disabled = disabled


@pytest.fixture
def n8n() -> Iterator[N8nSimulator]:
    yield N8nSimulator(slow_seconds=5.0)


@pytest.fixture
async def n8n_server(n8n: N8nSimulator) -> AsyncIterator[RunningServer]:
    async with serve(n8n.app) as server:
        yield server
