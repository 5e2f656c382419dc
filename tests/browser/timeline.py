"""What the meeting page shows, now and over time, for the state tests.

A sampler in the page records, every 10 ms, `data-state` and the RMS of what the page plays
(the analyser after the playback worklet and the agent's track: the rendered samples). Tests
turn the samples into spans and hold the shown state against the sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Page, ViewportSize

from .conftest import PageLog, save_screenshot, wait_for

# The rendered output counts as audible above this RMS (about -40 dBFS; the simulators' replies
# play at -10 dBFS or louder, a silent worklet renders zeros).
AUDIBLE_RMS = 0.01

START_SAMPLER = """() => {
  if (window.stateSamples) return;
  window.stateSamples = [];
  setInterval(() => {
    const voice = window.voicePage.voice;
    const { input, output } = voice.levels();
    const { state, agentState } = document.body.dataset;
    window.stateSamples.push([performance.now(), state, output, input, agentState]);
  }, 10);
}"""


@dataclass(frozen=True)
class Sample:
    t_ms: float  # performance.now() of the page
    state: str
    output_rms: float
    input_rms: float
    agent_state: str  # what the agent's messages said (generation)


@dataclass(frozen=True)
class Span:
    start_ms: float
    end_ms: float

    @property
    def ms(self) -> float:
        return self.end_ms - self.start_ms

    def __str__(self) -> str:
        return f"{self.start_ms:.0f}-{self.end_ms:.0f} ms ({self.ms:.0f} ms)"


def start_sampler(page: Page) -> None:
    page.evaluate(START_SAMPLER)


def samples(page: Page) -> list[Sample]:
    raw: list[list[Any]] = page.evaluate("window.stateSamples")
    return [
        Sample(float(t), str(state), float(out), float(inp), str(agent))
        for t, state, out, inp, agent in raw
    ]


def spans(points: list[tuple[float, bool]]) -> list[Span]:
    """The stretches where the flag holds, from (time, flag) points in time order."""
    out: list[Span] = []
    start: float | None = None
    for t, on in points:
        if on and start is None:
            start = t
        elif not on and start is not None:
            out.append(Span(start, t))
            start = None
    if start is not None and points:
        out.append(Span(start, points[-1][0]))
    return out


def state_spans(taken: list[Sample], state: str) -> list[Span]:
    return spans([(s.t_ms, s.state == state) for s in taken])


def agent_state_spans(taken: list[Sample], state: str) -> list[Span]:
    return spans([(s.t_ms, s.agent_state == state) for s in taken])


def audible_spans(taken: list[Sample]) -> list[Span]:
    return spans([(s.t_ms, s.output_rms > AUDIBLE_RMS) for s in taken])


def total_ms(found: list[Span]) -> float:
    return sum(span.ms for span in found)


def disagreements(
    taken: list[Sample], truth: list[Span], *, state: str, tolerance_ms: float
) -> list[Sample]:
    """Samples whose state says `state` while `truth` does not hold, or the reverse, farther
    than `tolerance_ms` from any edge of `truth`."""
    edges = [t for span in truth for t in (span.start_ms, span.end_ms)]
    wrong = []
    for sample in taken:
        holds = any(span.start_ms <= sample.t_ms < span.end_ms for span in truth)
        if (sample.state == state) == holds:
            continue
        if any(abs(sample.t_ms - edge) <= tolerance_ms for edge in edges):
            continue
        wrong.append(sample)
    return wrong


def describe(taken: list[Sample], truth: list[Span], state: str) -> str:
    """Both timelines, for an assertion message (and the lead's note)."""
    def listed(found: list[Span]) -> str:
        return ", ".join(str(span) for span in found) or "never"

    return (
        f"shown {state!r}: {listed(state_spans(taken, state))}; "
        f"agent said {state!r}: {listed(agent_state_spans(taken, state))}; "
        f"audible: {listed(truth)}"
    )


# -- what the page shows now ---------------------------------------------------------

SHOWN = """() => {
  const orb = getComputedStyle(document.getElementById('orb')).backgroundColor;
  const [r, g, b] = orb.match(/\\d+/g).map(Number);
  return {
    state: document.body.dataset.state,
    phase: document.body.dataset.phase,
    word: document.getElementById('agent-state').textContent,
    problem: document.getElementById('problem').hidden
      ? null : document.getElementById('problem').textContent,
    green: g > Math.max(r, b) + 30,
    wordPx: parseFloat(getComputedStyle(document.getElementById('agent-state')).fontSize),
  };
}"""


def shown(page: Page) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(SHOWN)
    return found


def wait_until_shown(page: Page, state: str, log: PageLog) -> dict[str, Any]:
    """Wait for `state`, and for the orb's colour transition to end."""
    wait_for(page, f"document.body.dataset.state === {state!r}", timeout_s=15, log=log)
    settled(page, log)
    return shown(page)


def settled(page: Page, log: PageLog | None = None) -> None:
    """Wait until no colour transition runs (the orb's pulse runs for ever: not counted)."""
    wait_for(
        page,
        "document.getAnimations().every((a) => a.animationName === 'pending'"
        " || a.playState !== 'running')",
        timeout_s=5,
        log=log or PageLog(),
    )


# -- the meeting's tile ----------------------------------------------------------------

FULL = ViewportSize(width=1280, height=720)
TILE = ViewportSize(width=320, height=180)
# Text smaller than this on the tile is not read from across a room (nor at all, below ~9 px).
LEGIBLE_PX = 12

MEASURE = """(selectors) => Object.fromEntries(selectors.map((selector) => {
  const el = document.querySelector(selector);
  if (!el || el.hidden || el.offsetParent === null) return [selector, null];
  const box = el.getBoundingClientRect();
  return [selector, {
    text: el.textContent,
    px: parseFloat(getComputedStyle(el).fontSize),
    inside: box.left >= 0 && box.right <= innerWidth + 0.5 && box.bottom <= innerHeight + 0.5,
    clipped: el.scrollWidth > el.clientWidth + 1,
  }];
}))"""

WORD = "#agent-state"
LINE_UNDER = "#tool"
PROBLEM = "#problem"
UTTERANCE = "#transcript li:last-child"
BADGE = "#mode-badge.backup"


def tile(page: Page, name: str, selectors: list[str]) -> dict[str, dict[str, Any]]:
    """Save the page at 1280x720 and at 320x180; what `selectors` show on the tile."""
    settled(page)
    save_screenshot(page, f"tile-{name}-1280x720")
    page.set_viewport_size(TILE)
    try:
        page.evaluate("new Promise((resolve) => requestAnimationFrame(() => resolve()))")
        measured: dict[str, dict[str, Any]] = page.evaluate(MEASURE, selectors)
        save_screenshot(page, f"tile-{name}-320x180")
    finally:
        page.set_viewport_size(FULL)
    return measured


def assert_legible(measured: dict[str, dict[str, Any]]) -> None:
    for selector, found in measured.items():
        assert found is not None, f"{selector} is not shown"
        assert found["px"] >= LEGIBLE_PX, (selector, found)
        assert found["inside"] and not found["clipped"], (selector, found)
    assert measured[WORD]["px"] >= 2 * LEGIBLE_PX  # the state reads first
