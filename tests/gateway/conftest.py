"""Fixtures of the gateway's tests: a clock the tests move by hand (the store under test is in
tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.stack import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
