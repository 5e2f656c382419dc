"""Fixtures of the lab's tests: one spoken question, made by espeak-ng once per module."""

from __future__ import annotations

import pytest

from simulators.speech import have_espeak
from voicegw.lab import audio


@pytest.fixture(scope="module")
def question() -> audio.Conversation:
    if not have_espeak():
        pytest.fail("espeak-ng and sox are required (make system-deps)")
    return audio.conversation(["What is on the agenda today"], gap_s=2.0, tail_s=2.0)
