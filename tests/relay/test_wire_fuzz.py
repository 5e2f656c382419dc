"""Fuzzing the relay's frame reader (relay/wire.py) with hypothesis. In `make test` each property
runs hypothesis' default number of examples; `--hypothesis-profile=fuzz` runs them for much
longer (README, "Security").

The properties: whatever bytes arrive, in whatever pieces, the reader either returns frames or
raises ProtocolError, nothing else; a frame announcing more than the limit is refused as soon
as its header is in, before any payload; and messages written by another implementation
(websockets), fragmented and interleaved with control frames, split at any points, come out
whole and in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from relay.wire import BINARY, PING, PONG, TEXT, FrameReader, ProtocolError

pytestmark = pytest.mark.fuzz


@st.composite
def pieces(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at arbitrary points."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(
    st.binary(max_size=600).flatmap(pieces),
    st.booleans(),
    st.integers(min_value=0, max_value=300),
)
def test_any_bytes_give_frames_or_a_protocol_error(
    chunks: list[bytes], masked: bool, max_size: int
) -> None:
    reader = FrameReader(masked=masked, max_size=max_size)
    try:
        for chunk in chunks:
            for opcode, payload in reader.feed(chunk):
                assert opcode in (TEXT, BINARY, PING, PONG, 0x8)
                if opcode in (TEXT, BINARY):
                    assert len(payload) <= max_size
                else:
                    assert len(payload) <= 125
    except ProtocolError as error:
        assert error.code in (1002, 1009)


@given(
    st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    st.integers(min_value=1, max_value=1 << 40),
    st.integers(min_value=0, max_value=4096),
)
def test_an_oversize_frame_is_refused_from_its_header(
    opcode: Opcode, excess: int, max_size: int
) -> None:
    length = max_size + excess
    if length < 126:
        head = bytes((0x80 | opcode.value, 0x80 | length))
    elif length < 1 << 16:
        head = bytes((0x80 | opcode.value, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode.value, 0x80 | 127)) + length.to_bytes(8, "big")
    reader = FrameReader(masked=True, max_size=max_size)
    with pytest.raises(ProtocolError) as refused:
        reader.feed(head + b"\x01\x02\x03\x04")  # the mask key; no payload byte sent
    assert refused.value.code == 1009


control = st.tuples(st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125))
message = st.tuples(
    st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    st.binary(max_size=300),
    st.lists(st.integers(0, 300), max_size=3),  # where the message is fragmented
    st.lists(control, max_size=2),  # controls between its fragments
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Masked frames as websockets writes them, and what the reader must return for them."""
    wire = b""
    expected: list[tuple[int, bytes]] = []
    for opcode, payload, cuts, controls in draw(st.lists(message, max_size=6)):
        bounds = [0, *sorted({c for c in cuts if 0 < c < len(payload)}), len(payload)]
        fragments = [payload[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        for index, fragment in enumerate(fragments):
            first, last = index == 0, index == len(fragments) - 1
            kind = opcode if first else Opcode.CONT
            wire += Frame(kind, fragment, fin=last).serialize(mask=True)
            if not last and controls:
                ctl_opcode, ctl_payload = controls.pop()
                wire += Frame(ctl_opcode, ctl_payload).serialize(mask=True)
                expected.append((ctl_opcode.value, ctl_payload))
        expected.append((opcode.value, payload))
    return wire, expected


@given(conversations().flatmap(lambda c: st.tuples(pieces(c[0]), st.just(c[1]))))
def test_messages_come_out_whole_and_in_order(
    case: tuple[list[bytes], list[tuple[int, bytes]]],
) -> None:
    chunks, expected = case
    reader = FrameReader(masked=True, max_size=300)
    received = [frame for chunk in chunks for frame in reader.feed(chunk)]
    assert received == expected
