"""Fuzzing the client gate (hypothesis). In `make test` each property runs hypothesis' default
number of examples (a second or two); `--hypothesis-profile=fuzz` runs them for much longer
(README, "Security").

The properties: the gate never raises and whatever it passes is ASCII JSON that reads back as
exactly one object; the append fast path forwards a frame as received only when the full gate
would send the same object (adversarial appends: repeated keys, escaped keys, case variants,
extra fields, non-string values); the protocol core turns any frame into actions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.openai_realtime import RealtimeOptions, RelayProtocol
from pipelines.openai_realtime.client import (
    ALLOWED,
    Passed,
    append_audio_chars,
    check_client_frame,
)

pytestmark = pytest.mark.fuzz


def strict_loads(text: str) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), "a repeated key"
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
KEYS = ["type", "event_id", "audio", "Audio", "AUDIO", "Type", "instructions", "item", "response"]
key = st.sampled_from(KEYS) | st.text(max_size=12)
event_type = st.sampled_from([*ALLOWED, "conversation.item.delete", "response.audio.delta"])


def render_key(name: str, escape: bool) -> str:
    if escape and name and ord(name[0]) <= 0xFFFF:  # the same key, its first letter escaped
        return f'"\\u{ord(name[0]):04x}' + json.dumps(name[1:])[1:]
    return json.dumps(name)


@st.composite
def events(draw: st.DrawFn) -> str:
    """A JSON object text with a known or unknown type first, then keys that may repeat, be
    escaped or differ in case, with any values, joined with any spacing."""
    space = draw(st.sampled_from(["", " ", "\n  "]))
    pairs = [f'"type":{space}{json.dumps(draw(event_type))}']
    for _ in range(draw(st.integers(0, 5))):
        name = draw(key)
        value = draw(st.text(alphabet="AB+/=", max_size=8) | json_values)
        pairs.append(f"{render_key(name, draw(st.booleans()))}:{space}{json.dumps(value)}")
    return "{" + f",{space}".join(pairs) + "}"


@st.composite
def appends(draw: st.DrawFn) -> str:
    """Appends that open like our page's and the SDKs' (so they reach the fast path's checks),
    followed by adversarial fields."""
    spacing = draw(st.sampled_from([("", ""), (" ", " ")]))
    colon, comma = ":" + spacing[0], "," + spacing[1]
    parts = [f'{{"type"{colon}"input_audio_buffer.append"']
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["audio", "event_id", "Audio", "type", "x"]) | key)
        value = draw(
            st.text(alphabet="AQgw+/=", max_size=12)
            | st.sampled_from(["input_audio_buffer.append", 'A"A', "A\\A"])
            | json_values
        )
        parts.append(f"{comma}{render_key(name, draw(st.booleans()))}{colon}{json.dumps(value)}")
    return "".join(parts) + "}"


@given(st.text(max_size=200) | events() | appends())
def test_the_gate_never_raises_and_passes_one_reading(text: str) -> None:
    verdict = check_client_frame(text)
    if isinstance(verdict, Passed):
        assert verdict.text.isascii()
        sent = strict_loads(verdict.text)
        assert sent["type"] == verdict.event_type in ALLOWED
        assert sent == strict_loads(check_client_frame(verdict.text).text)  # type: ignore[union-attr]


@given(appends())
def test_the_append_fast_path_forwards_only_what_the_gate_would_send(text: str) -> None:
    chars = append_audio_chars(text)
    if chars < 0:
        return
    original = strict_loads(text)  # no repeated key, as written
    verdict = check_client_frame(text)
    assert isinstance(verdict, Passed), verdict
    assert strict_loads(verdict.text) == original
    assert chars == verdict.audio_chars == len(original["audio"])


@given(st.lists(st.text(max_size=80) | events() | appends(), max_size=20))
def test_the_core_turns_any_frame_into_actions(frames: list[str]) -> None:
    core = RelayProtocol(RealtimeOptions())
    for index, frame in enumerate(frames):
        actions = core.client_frame(frame, index * 0.01)
        assert len(actions) >= 1
