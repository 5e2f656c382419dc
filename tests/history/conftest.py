"""A history of the test's own on each database (`database_url` runs a test on both)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from history import History, HistoryConfig


@pytest.fixture
async def history(database_url: str) -> AsyncIterator[History]:
    """Started (schema migrated before the first write), closed after the test."""
    opened = History(HistoryConfig(url=database_url), retention=False)
    opened.start()
    try:
        yield opened
    finally:
        await opened.aclose()
