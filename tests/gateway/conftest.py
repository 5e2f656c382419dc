"""Fixtures of the gateway's tests: a clock the tests move by hand."""

from __future__ import annotations

import pytest

from tests.stack import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
