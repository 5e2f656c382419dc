"""A progress line for long `voicegw talk` and `compare` runs, on a terminal only.

A conversation plays in real time, so `compare --turns 20` takes minutes. On a terminal,
stderr shows one line, rewritten in place: turns done, time elapsed, the last turn's
voice-to-voice. When stderr is not a terminal (a pipe, a log file, CI) nothing is written, and
stdout is never touched: it stays clean for `--json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TextIO

from .turns import Turn, format_ms

TICK_S = 1.0


class Progress:
    """`turn()` counts a finished turn; `shown()` keeps the line up to date while it runs."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._total = total
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._started = clock()
        self._done = 0
        self._last: tuple[str | None, float | None] | None = None
        self.enabled = self._stream.isatty()

    def turn(self, turn: Turn, mode: str | None = None) -> None:
        self._done += 1
        self._last = (mode, turn.voice_to_voice_ms)
        self._draw()

    def line(self) -> str:
        elapsed = int(self._clock() - self._started)
        done = f"{self._done}/{self._total}" if self._total is not None else str(self._done)
        parts = [f"{done} turns", f"{elapsed // 60}:{elapsed % 60:02d} elapsed"]
        if self._last is not None:
            mode, v2v = self._last
            parts.append(f"last voice-to-voice {format_ms(v2v)}" + (f" ({mode})" if mode else ""))
        return f"{self._label}: " + " · ".join(parts)

    @contextlib.asynccontextmanager
    async def shown(self) -> AsyncIterator[Progress]:
        """The line, redrawn every second until the block ends, then left on its own line."""
        if not self.enabled:
            yield self
            return
        self._started = self._clock()
        self._draw()
        ticker = asyncio.create_task(self._tick())
        # A log line on the same terminal first clears the progress line (the next tick
        # redraws it below), so the two never share a line.
        handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is self._stream
        ]
        clear = _ClearLine(self._stream)
        for handler in handlers:
            handler.addFilter(clear)
        try:
            yield self
        finally:
            for handler in handlers:
                handler.removeFilter(clear)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._draw()

    def _draw(self) -> None:
        if self.enabled:
            self._stream.write(f"\r{self.line()}\x1b[K")
            self._stream.flush()


class _ClearLine(logging.Filter):
    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        self._stream.write("\r\x1b[K")
        return True
