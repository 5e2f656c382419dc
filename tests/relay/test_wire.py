"""relay/wire.py without sockets: frame round trips at every length boundary, interop with the
websockets library both ways, partial and fragmented input, each protocol error's close code,
close frames, the handshake keys and the masking keys."""

from __future__ import annotations

import base64

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from relay.wire import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    FrameReader,
    FrameSender,
    ProtocolError,
    accept_value,
    close_payload,
    encode_frame,
    new_key,
    parse_close,
)

FIN = 0x80
SIZES = [0, 125, 126, 65535, 65536]
MAX_SIZE = 1024


def frame(
    first: int, payload: bytes = b"", *, mask: bool = True, length: int | None = None
) -> bytes:
    """A frame built by hand, however wrong: `first` is the FIN/RSV/opcode byte and `length`
    the length its header announces (the payload's own by default)."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x37\xfa\x21\x3d"
    return head + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def text_of(size: int) -> bytes:
    """Valid UTF-8 of exactly `size` bytes, with multi-byte characters in it."""
    return ("a" * (size % 2) + "é" * (size // 2)).encode()


def refused(data: bytes, *, masked: bool = True) -> int:
    """The close code FrameReader raises on `data`."""
    with pytest.raises(ProtocolError) as error:
        FrameReader(masked=masked, max_size=MAX_SIZE).feed(data)
    return error.value.code


def library_client() -> ClientProtocol:
    return ClientProtocol(parse_uri("ws://127.0.0.1/"), state=OPEN, max_size=None)


def library_server() -> ServerProtocol:
    return ServerProtocol(state=OPEN, max_size=None)


def sent_by(protocol: Protocol) -> bytes:
    return b"".join(protocol.data_to_send())


def received_by(protocol: Protocol, data: bytes) -> list[tuple[int, bytes]]:
    protocol.receive_data(data)
    events = protocol.events_received()
    return [(event.opcode, bytes(event.data)) for event in events if isinstance(event, Frame)]


# -- round trips and interop ------------------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size: int, masked: bool) -> None:
    payload = bytes(i % 251 for i in range(size))
    reader = FrameReader(masked=masked, max_size=1 << 20)
    assert reader.feed(encode_frame(BINARY, payload, mask=masked)) == [(BINARY, payload)]


@pytest.mark.parametrize("size", SIZES)
def test_library_client_frames_parse_as_masked(size: int) -> None:
    client = library_client()
    client.send_text(text_of(size))
    client.send_ping(b"hi")
    reader = FrameReader(masked=True, max_size=1 << 20)
    assert reader.feed(sent_by(client)) == [(TEXT, text_of(size)), (PING, b"hi")]


@pytest.mark.parametrize("size", SIZES)
def test_library_server_frames_parse_as_unmasked(size: int) -> None:
    server = library_server()
    server.send_text(text_of(size))
    server.send_ping(b"hi")
    reader = FrameReader(masked=False, max_size=1 << 20)
    assert reader.feed(sent_by(server)) == [(TEXT, text_of(size)), (PING, b"hi")]


@pytest.mark.parametrize("size", SIZES)
def test_our_masked_frames_parse_in_the_library_server(size: int) -> None:
    server = library_server()
    assert received_by(server, encode_frame(TEXT, text_of(size), mask=True)) == [
        (Opcode.TEXT, text_of(size))
    ]
    assert server.close_code is None  # nothing it failed the connection over


@pytest.mark.parametrize("size", SIZES)
def test_our_unmasked_frames_parse_in_the_library_client(size: int) -> None:
    client = library_client()
    assert received_by(client, encode_frame(TEXT, text_of(size), mask=False)) == [
        (Opcode.TEXT, text_of(size))
    ]
    assert client.close_code is None


# -- partial and fragmented input -------------------------------------------------------------


def test_a_frame_fed_byte_by_byte_yields_one_message_at_the_end() -> None:
    payload = text_of(300)  # a two-byte extended length, split across feeds too
    data = encode_frame(TEXT, payload, mask=True)
    reader = FrameReader(masked=True, max_size=MAX_SIZE)
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [[]] * (len(data) - 1)
    assert results[-1] == [(TEXT, payload)]
    assert reader.feed(encode_frame(PONG, b"next", mask=True)) == [(PONG, b"next")]


def test_frames_split_anywhere_across_feeds() -> None:
    first, second, third = (encode_frame(TEXT, text_of(n), mask=True) for n in (10, 200, 30))
    reader = FrameReader(masked=True, max_size=MAX_SIZE)
    assert reader.feed(first + second + third[:3]) == [(TEXT, text_of(10)), (TEXT, text_of(200))]
    assert reader.feed(third[3:]) == [(TEXT, text_of(30))]


def test_fragmented_message_with_a_ping_in_between() -> None:
    data = b"".join(
        Frame(opcode, payload, fin=fin).serialize(mask=True, extensions=[])
        for opcode, payload, fin in [
            (Opcode.TEXT, b"hel", False),
            (Opcode.PING, b"p", True),
            (Opcode.CONT, b"lo ", False),
            (Opcode.CONT, b"world", True),
        ]
    )
    reader = FrameReader(masked=True, max_size=MAX_SIZE)
    assert reader.feed(data) == [(PING, b"p"), (TEXT, b"hello world")]
    assert reader.feed(encode_frame(BINARY, b"\x00", mask=True)) == [(BINARY, b"\x00")]


def test_fragmented_message_from_the_library_client() -> None:
    client = library_client()
    client.send_binary(b"ab", fin=False)
    client.send_continuation(b"cd", fin=True)
    reader = FrameReader(masked=True, max_size=MAX_SIZE)
    assert reader.feed(sent_by(client)) == [(BINARY, b"abcd")]


# -- protocol errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "masked"),
    [
        pytest.param(frame(FIN | 0x40 | TEXT, b"x"), True, id="rsv1"),
        pytest.param(frame(FIN | 0x20 | TEXT, b"x"), True, id="rsv2"),
        pytest.param(frame(FIN | 0x10 | TEXT, b"x"), True, id="rsv3"),
        pytest.param(frame(FIN | TEXT, b"x", mask=False), True, id="unmasked-to-server"),
        pytest.param(frame(FIN | TEXT, b"x", mask=True), False, id="masked-to-client"),
        pytest.param(frame(FIN | PING, b"x" * 126), True, id="long-ping"),
        pytest.param(frame(FIN | CLOSE, b"\x03\xe8" + b"x" * 124), True, id="long-close"),
        pytest.param(frame(PING, b"x"), True, id="fragmented-ping"),
        pytest.param(frame(FIN | 0x3, b"x"), True, id="opcode-3"),
        pytest.param(frame(FIN | 0xB, b"x"), True, id="opcode-B"),
        pytest.param(frame(FIN | CONT, b"x"), True, id="continuation-first"),
        pytest.param(frame(TEXT, b"a") + frame(FIN | TEXT, b"b"), True, id="new-mid-message"),
        pytest.param(frame(BINARY, b"a") + frame(BINARY, b"b"), True, id="two-starts"),
    ],
)
def test_protocol_errors_close_1002(data: bytes, masked: bool) -> None:
    assert refused(data, masked=masked) == 1002


@pytest.mark.parametrize("announced", [MAX_SIZE + 1, 65536, 1 << 40])
def test_oversize_header_closes_1009_before_the_payload(announced: int) -> None:
    header = frame(FIN | BINARY, length=announced)  # the header and mask key, no payload
    assert refused(header) == 1009


def test_fragments_adding_up_past_max_size_close_1009() -> None:
    half = MAX_SIZE // 2 + 1
    assert refused(frame(TEXT, text_of(half)) + frame(FIN | CONT, length=half)) == 1009


def test_fragmented_messages_of_exactly_max_size_are_accepted() -> None:
    reader = FrameReader(masked=True, max_size=MAX_SIZE)
    half = text_of(MAX_SIZE // 2)
    for _ in range(2):  # the second is counted from zero again
        assert reader.feed(frame(TEXT, half) + frame(FIN | CONT, half)) == [(TEXT, half * 2)]


# -- close frames -----------------------------------------------------------------------------


def close_code_of(payload: bytes) -> int:
    with pytest.raises(ProtocolError) as error:
        parse_close(payload)
    return error.value.code


def test_close_without_a_code_is_1005() -> None:
    assert parse_close(b"") == (1005, "")


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1012, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert parse_close(code.to_bytes(2, "big") + "bye é".encode()) == (code, "bye é")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000])
def test_invalid_close_codes_are_1002(code: int) -> None:
    assert close_code_of(code.to_bytes(2, "big")) == 1002


def test_one_byte_close_payload_is_1002() -> None:
    assert close_code_of(b"\x03") == 1002


def test_close_reason_that_is_not_utf8_is_1007() -> None:
    assert close_code_of(b"\x03\xe8\xff\xfe") == 1007


def test_close_payload_round_trips() -> None:
    assert parse_close(close_payload(4001, "going away")) == (4001, "going away")
    assert parse_close(close_payload(1000)) == (1000, "")


def test_long_close_reason_is_cut_to_fit_a_control_frame() -> None:
    payload = close_payload(1011, "x" * 300)
    assert len(payload) <= 125
    assert parse_close(payload) == (1011, "x" * 123)
    client = library_client()
    assert received_by(client, encode_frame(CLOSE, payload, mask=False)) == [
        (Opcode.CLOSE, payload)
    ]


def test_long_close_reason_is_cut_on_a_character_boundary() -> None:
    reason = "é" * 100  # 200 bytes of two-byte characters
    payload = close_payload(1011, reason)
    assert len(payload) <= 125
    code, cut = parse_close(payload)
    assert code == 1011 and cut and reason.startswith(cut)


# -- keys -------------------------------------------------------------------------------------


def test_accept_value_matches_rfc_6455() -> None:
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_new_key_is_16_fresh_bytes() -> None:
    first, second = new_key(), new_key()
    assert len(base64.b64decode(first, validate=True)) == 16
    assert first != second


def test_each_masked_frame_gets_a_fresh_key() -> None:
    payload = b"the same payload"
    first, second = (encode_frame(TEXT, payload, mask=True) for _ in range(2))
    assert first != second
    reader = FrameReader(masked=True, max_size=MAX_SIZE)
    assert reader.feed(first + second) == [(TEXT, payload), (TEXT, payload)]


def test_masking_keys_stay_fresh_across_pool_refills() -> None:
    keys = [encode_frame(PONG, b"", mask=True)[2:6] for _ in range(3000)]  # ~3 pools of 1,024
    assert len(set(keys)) > 2990  # a repeat or two is chance; a reused pool is 1,024


class RecordingTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def test_sender_stops_at_its_close_frame_and_says_so_once() -> None:
    transport, closes = RecordingTransport(), []
    sender = FrameSender(transport, mask=False, on_close_sent=lambda: closes.append(1))
    sender.send(TEXT, b"before")
    sender.send_close(1000, "bye")
    sender.send_close(1011, "again")
    sender.send(TEXT, b"after")
    reader = FrameReader(masked=False, max_size=1024)
    frames = reader.feed(b"".join(transport.written))
    assert frames == [(TEXT, b"before"), (CLOSE, close_payload(1000, "bye"))]
    assert closes == [1] and not transport.closed


def test_sender_answers_a_close_with_its_code_and_closes() -> None:
    transport = RecordingTransport()
    FrameSender(transport, mask=True).answer_close(close_payload(4000, "done"))
    frames = FrameReader(masked=True, max_size=1024).feed(b"".join(transport.written))
    assert frames == [(CLOSE, close_payload(4000))] and transport.closed


def test_a_frame_limit_leaves_the_rest_for_the_next_feed() -> None:
    """`max_frames` parses that many frames and keeps the rest, fragments included, so that
    feeding on gives exactly what one unlimited feed gives."""
    client = library_client()
    for i in range(5):
        client.send_binary(bytes([i]))
    client.send_text(b"he", fin=False)
    client.send_continuation(b"llo", fin=True)
    client.send_ping(b"p")
    data = sent_by(client)
    whole = FrameReader(masked=True, max_size=1 << 20).feed(data)
    reader = FrameReader(masked=True, max_size=1 << 20)
    batches = [reader.feed(data, max_frames=3)]
    while reader.limited:
        batches.append(reader.feed(b"", max_frames=3))
    # 8 frames in batches of 3; the fragments are one message, in the batch of their last
    assert [len(batch) for batch in batches] == [3, 2, 2]
    assert [frame for batch in batches for frame in batch] == whole
    assert reader.pending == 0
    assert whole[5:] == [(TEXT, b"hello"), (PING, b"p")]
