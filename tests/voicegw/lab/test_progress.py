"""The progress line: on a terminal only, rewritten in place, never sharing a line with a log
line, and left on its own line at the end."""

from __future__ import annotations

import io
import logging

from tests.stack import FakeClock
from voicegw.lab.progress import Progress
from voicegw.lab.turns import Turn


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_says_turns_elapsed_and_the_last_voice_to_voice() -> None:
    clock = FakeClock()
    progress = Progress("compare", total=4, stream=Terminal(), clock=clock)
    assert progress.line() == "compare: 0/4 turns · 0:00 elapsed"
    clock.advance(65.4)
    progress.turn(Turn(voice_to_voice_ms=572.4), "livekit")
    assert progress.line() == (
        "compare: 1/4 turns · 1:05 elapsed · last voice-to-voice 572 ms (livekit)"
    )
    progress.turn(Turn(), "openai")
    assert progress.line().endswith("2/4 turns · 1:05 elapsed · last voice-to-voice n/a (openai)")


async def test_on_a_terminal_it_is_drawn_in_place_and_log_lines_clear_it() -> None:
    terminal = Terminal()
    handler = logging.StreamHandler(terminal)  # as voicegw's on stderr
    logger = logging.getLogger("tests.progress")
    logging.getLogger().addHandler(handler)
    try:
        progress = Progress("talk", total=1, stream=terminal)
        async with progress.shown():
            logger.warning("a log line")
            progress.turn(Turn(voice_to_voice_ms=600.0))
        logger.warning("after")
    finally:
        logging.getLogger().removeHandler(handler)
    written = terminal.getvalue()
    assert written.startswith("\rtalk: 0/1 turns")
    assert "\r\x1b[Ka log line\n" in written  # the progress line was cleared first
    last = "\rtalk: 1/1 turns · 0:00 elapsed · last voice-to-voice 600 ms\x1b[K\n"
    assert written.endswith(last + "after\n")  # left on its own line; the filter is gone


async def test_elsewhere_it_writes_nothing() -> None:
    stream = io.StringIO()
    progress = Progress("compare", total=2, stream=stream)
    async with progress.shown():
        progress.turn(Turn(voice_to_voice_ms=500.0), "livekit")
    assert not progress.enabled and stream.getvalue() == ""
