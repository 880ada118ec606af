"""The sans-I/O frame parser (RFC 6455 section 5), fed hand-built masked frames."""

from __future__ import annotations

import itertools
import tracemalloc
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiohttp_upgrade._closecode import is_valid_close_code
from aiohttp_upgrade._compat import compiled_mask
from aiohttp_upgrade._deflate import Inflater
from aiohttp_upgrade._errors import ProtocolError
from aiohttp_upgrade._frames import unmask
from aiohttp_upgrade._parser import FrameParser

from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    client_frame,
    close_payload,
    mask_payload,
)

MAX = 1024

Event = tuple[str, Any]


class Sink:
    """Records every parser callback as ``(kind, value)``."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_message(self, message: str | bytes) -> None:
        self.events.append(("message", message))

    def on_ping(self, data: bytes) -> None:
        self.events.append(("ping", data))

    def on_pong(self, data: bytes) -> None:
        self.events.append(("pong", data))

    def on_close(self, code: int, reason: str) -> None:
        self.events.append(("close", (code, reason)))

    def on_protocol_error(self, error: ProtocolError) -> None:
        self.events.append(("error", error.code))


def parse(*frames: bytes, max_size: int = MAX) -> list[Event]:
    """Feed ``frames`` as one read; return what the sink saw."""
    sink = Sink()
    FrameParser(sink, max_size).feed(b"".join(frames))
    return sink.events


def parse_chunks(
    chunks: Iterable[bytes], max_size: int = MAX, deflate: bool = False
) -> list[Event]:
    """Feed each chunk as a separate read; return what the sink saw.

    With ``deflate`` the parser inflates RSV1 messages, with context takeover.
    """
    sink = Sink()
    inflater = Inflater(max_size, no_context_takeover=False) if deflate else None
    parser = FrameParser(sink, max_size, inflater)
    for chunk in chunks:
        parser.feed(chunk)
    return sink.events


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    return client_frame(opcode, payload, fin=fin, rsv=rsv)


# -- unmasking -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length", [0, 1, 3, 4, 5, 125, 1000], ids=lambda n: f"{n}-bytes"
)
def test_unmask_matches_the_rfc_xor(length: int) -> None:
    """unmask XORs with the mask repeated every 4 bytes, for any length."""
    payload = bytes(range(256)) * 4
    payload = payload[:length]
    mask = b"\x12\x34\x56\x78"
    assert unmask(mask_payload(payload, mask), mask) == payload


# -- data frames -----------------------------------------------------------------------


def test_text_frame_is_delivered_as_str() -> None:
    """A final text frame is one str message."""
    assert parse(frame(OP_TEXT, "héllo".encode())) == [("message", "héllo")]


def test_binary_frame_is_delivered_as_bytes() -> None:
    """A final binary frame is one bytes message."""
    assert parse(frame(OP_BINARY, b"\x00\xff")) == [("message", b"\x00\xff")]


@pytest.mark.parametrize(
    ("opcode", "expected"),
    [(OP_TEXT, ""), (OP_BINARY, b"")],
    ids=["text", "binary"],
)
def test_empty_message_is_delivered(opcode: int, expected: str | bytes) -> None:
    """A zero-length message is delivered, typed by its opcode."""
    assert parse(frame(opcode)) == [("message", expected)]


@pytest.mark.parametrize(
    "length",
    [125, 126, 65535, 65536, 70000],
    ids=["7-bit-max", "16-bit-min", "16-bit-max", "64-bit-min", "64-bit"],
)
def test_every_length_encoding_is_parsed(length: int) -> None:
    """Payload lengths in the 7-, 16- and 64-bit encodings are all read correctly."""
    payload = bytes(i % 251 for i in range(length))
    assert parse(frame(OP_BINARY, payload), max_size=length) == [("message", payload)]


def test_several_frames_in_one_read_are_all_delivered_in_order() -> None:
    """Frames that arrive in one read are delivered one by one, in order."""
    events = parse(frame(OP_TEXT, b"a"), frame(OP_BINARY, b"b"), frame(OP_TEXT, b"c"))
    assert events == [("message", "a"), ("message", b"b"), ("message", "c")]


def as_bytearray(data: bytes) -> bytearray:
    return bytearray(data)


def as_view_inside(data: bytes) -> memoryview:
    """A view into a larger bytearray, as the server's shared read buffer lends."""
    return memoryview(bytearray(b"\xff" * 3 + data + b"\xff"))[3:-1]


def as_strided_view(data: bytes) -> memoryview:
    """A view whose bytes are not next to each other in memory."""
    spaced = bytearray(2 * len(data))
    spaced[::2] = data
    return memoryview(spaced)[::2]


BIG = bytes(range(256)) * 300  # an extended length; a copy through a view
FRAMES = frame(OP_TEXT, "héllo".encode()) + frame(OP_BINARY, BIG) + frame(OP_PING)
EXPECTED = [("message", "héllo"), ("message", BIG), ("ping", b"")]


@pytest.mark.parametrize(
    "kind",
    [bytes, as_bytearray, as_view_inside, as_strided_view],
    ids=lambda k: k.__name__,
)
def test_every_kind_of_chunk_is_parsed_alike(
    kind: Callable[[bytes], bytes | bytearray | memoryview],
) -> None:
    """The compiled parser reads bytes, bytearrays and views through a pointer
    (``_cbuffers.pxd``); what it makes of them is what the pure one makes."""
    sink = Sink()
    FrameParser(sink, 1 << 20).feed(kind(FRAMES))
    assert sink.events == EXPECTED


@pytest.mark.parametrize(
    "kind", [bytes, as_bytearray, as_view_inside], ids=lambda k: k.__name__
)
def test_every_kind_of_chunk_is_parsed_alike_across_reads(
    kind: Callable[[bytes], bytes | bytearray | memoryview],
) -> None:
    """Cut inside the big payload and inside the ping's header: the frame's start
    is kept from a chunk of that kind, and completed by another."""
    sink = Sink()
    parser = FrameParser(sink, 1 << 20)
    cut = len(FRAMES) - 1
    for chunk in (FRAMES[:100], FRAMES[100:cut], FRAMES[cut:]):
        parser.feed(kind(chunk))
    assert sink.events == EXPECTED


def test_a_released_view_fails_as_in_python() -> None:
    view = memoryview(bytearray(FRAMES))
    view.release()
    with pytest.raises(ValueError, match="released"):
        FrameParser(Sink(), 1 << 20).feed(view)


def test_frame_fed_byte_by_byte_is_delivered_once() -> None:
    """A frame split into one-byte reads is delivered once, after its last byte."""
    data = frame(OP_TEXT, b"x" * 300)
    sink = Sink()
    parser = FrameParser(sink, MAX)
    for i in range(len(data) - 1):
        parser.feed(data[i : i + 1])
    assert sink.events == []
    parser.feed(data[-1:])
    assert sink.events == [("message", "x" * 300)]


@pytest.mark.parametrize(
    "chunk", [1, 7, 1000, 4096, 65536], ids=lambda n: f"reads-of-{n}"
)
def test_big_frame_split_across_many_reads_is_delivered_whole(chunk: int) -> None:
    """A frame larger than the read size is reassembled from many reads."""
    payload = bytes(i % 253 for i in range(200_000))
    data = frame(OP_BINARY, payload) + frame(OP_TEXT, b"next")
    events = parse_chunks(split(data, chunk), max_size=len(payload))
    assert events == [("message", payload), ("message", "next")]


def test_big_frame_tail_and_next_frame_in_one_read() -> None:
    """The read that completes a big frame may also carry the next frame whole."""
    payload = b"z" * 100_000
    data = frame(OP_BINARY, payload)
    events = parse_chunks(
        [data[:50_000], data[50_000:] + frame(OP_PING, b"p")], max_size=len(payload)
    )
    assert events == [("message", payload), ("ping", b"p")]


@pytest.mark.parametrize(
    ("opcode", "read_size"),
    [(OP_BINARY, 1), (OP_BINARY, 2), (OP_BINARY, 7), (OP_TEXT, 3)],
    ids=[
        "binary-1-byte-reads",
        "binary-2-byte-reads",
        "binary-7-byte-reads",
        "text-3-byte-reads",
    ],
)
def test_incomplete_frame_costs_about_its_size_in_memory(
    opcode: int, read_size: int
) -> None:
    """A 256 KiB frame arriving in tiny reads holds under 1.5 times its size until its last byte."""
    size = 256 * 1024
    payload = b"w" * size
    data = frame(opcode, payload)
    sink = Sink()
    parser = FrameParser(sink, size)
    last = len(data) - 1
    tracemalloc.start()
    try:
        for i in range(0, last, read_size):
            parser.feed(data[i : min(i + read_size, last)])
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.events == []
    parser.feed(data[last:])
    assert sink.events == [("message", payload if opcode == OP_BINARY else "w" * size)]
    assert retained < 1.5 * size, f"{retained / size:.1f} bytes per payload byte"


class MemorySink(Sink):
    """A sink that notes the traced memory in use when each message arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.in_use: list[int] = []

    def on_message(self, message: str | bytes) -> None:
        self.in_use.append(tracemalloc.get_traced_memory()[0])
        super().on_message(message)


@pytest.mark.parametrize(
    ("fragments", "bound"),
    [(1, 1.25), (4, 1.5)],
    ids=["one-frame", "four-fragments-last-one-still-held"],
)
def test_binary_message_from_many_reads_is_held_once_when_delivered(
    fragments: int, bound: float
) -> None:
    """When a 1 MiB binary message that came in 64 KiB reads is delivered, the parser holds no copy of it besides the message."""
    assert compiled_mask is not None
    size = 1024 * 1024
    part = size // fragments
    data = b"".join(
        frame(
            OP_BINARY if i == 0 else OP_CONTINUATION,
            bytes([i]) * part,
            fin=i == fragments - 1,
        )
        for i in range(fragments)
    )
    sink = MemorySink()
    parser = FrameParser(sink, size, mask=compiled_mask)
    tracemalloc.start()
    try:
        for i in range(0, len(data), 65536):
            parser.feed(data[i : i + 65536])
    finally:
        tracemalloc.stop()
    assert sink.events == [
        ("message", b"".join(bytes([i]) * part for i in range(fragments)))
    ]
    assert sink.in_use[0] < bound * size, (
        f"{sink.in_use[0] / size:.2f} times the message"
    )


# -- fragmentation ---------------------------------------------------------------------


def test_fragmented_text_is_one_message() -> None:
    """A text message in three fragments is delivered once, joined."""
    events = parse(
        frame(OP_TEXT, b"he", fin=False),
        frame(OP_CONTINUATION, b"ll", fin=False),
        frame(OP_CONTINUATION, b"o"),
    )
    assert events == [("message", "hello")]


def test_fragmented_binary_is_one_message() -> None:
    """A binary message in two fragments is delivered once, as bytes."""
    events = parse(
        frame(OP_BINARY, b"\x01", fin=False), frame(OP_CONTINUATION, b"\x02")
    )
    assert events == [("message", b"\x01\x02")]


def test_fragments_may_be_empty() -> None:
    """Empty fragments, including an empty final one, are allowed."""
    events = parse(
        frame(OP_TEXT, b"", fin=False),
        frame(OP_CONTINUATION, b"ab", fin=False),
        frame(OP_CONTINUATION, b""),
    )
    assert events == [("message", "ab")]


@pytest.mark.parametrize(
    ("control", "event"),
    [
        (frame(OP_PING, b"p"), ("ping", b"p")),
        (frame(OP_PONG, b"q"), ("pong", b"q")),
    ],
    ids=["ping", "pong"],
)
def test_control_frame_between_fragments_is_delivered_first(
    control: bytes, event: Event
) -> None:
    """A control frame in the middle of a fragmented message is handled at once (RFC 6455 5.4)."""
    events = parse(
        frame(OP_TEXT, b"a", fin=False), control, frame(OP_CONTINUATION, b"b")
    )
    assert events == [event, ("message", "ab")]


def test_close_between_fragments_ends_the_message_undelivered() -> None:
    """A Close in the middle of a fragmented message is reported and the fragments dropped."""
    events = parse(
        frame(OP_TEXT, b"a", fin=False),
        frame(OP_CLOSE, close_payload(1000)),
        frame(OP_CONTINUATION, b"b"),
    )
    assert events == [("close", (1000, ""))]


def test_messages_after_a_fragmented_one_are_independent() -> None:
    """After a fragmented message completes, the next message starts fresh."""
    events = parse(
        frame(OP_BINARY, b"a", fin=False),
        frame(OP_CONTINUATION, b"b"),
        frame(OP_TEXT, b"c"),
    )
    assert events == [("message", b"ab"), ("message", "c")]


@pytest.mark.parametrize(
    "frames",
    [
        [frame(OP_CONTINUATION, b"x")],
        [frame(OP_TEXT, b"a"), frame(OP_CONTINUATION, b"b")],
        [frame(OP_TEXT, b"a", fin=False), frame(OP_TEXT, b"b")],
        [frame(OP_TEXT, b"a", fin=False), frame(OP_BINARY, b"b")],
    ],
    ids=[
        "continuation-first",
        "continuation-after-final",
        "text-inside-fragmented",
        "binary-inside-fragmented",
    ],
)
def test_bad_fragment_sequence_is_error_1002(frames: list[bytes]) -> None:
    """Continuations without a message, or a new message mid-message, fail with 1002."""
    assert parse(*frames)[-1] == ("error", 1002)


# -- control frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opcode", "kind"), [(OP_PING, "ping"), (OP_PONG, "pong")], ids=["ping", "pong"]
)
@pytest.mark.parametrize("length", [0, 125], ids=["empty", "125-bytes"])
def test_ping_and_pong_payloads_are_delivered(
    opcode: int, kind: str, length: int
) -> None:
    """Ping and pong payloads of 0 to 125 bytes reach the sink unchanged."""
    payload = b"p" * length
    assert parse(frame(opcode, payload)) == [(kind, payload)]


@pytest.mark.parametrize(
    "opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"]
)
def test_control_frame_over_125_bytes_is_error_1002(opcode: int) -> None:
    """A control frame longer than 125 bytes fails with 1002 (RFC 6455 5.5)."""
    assert parse(frame(opcode, b"x" * 126)) == [("error", 1002)]


@pytest.mark.parametrize(
    "opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"]
)
def test_fragmented_control_frame_is_error_1002(opcode: int) -> None:
    """A control frame without FIN fails with 1002 (RFC 6455 5.5)."""
    assert parse(frame(opcode, b"x", fin=False)) == [("error", 1002)]


@pytest.mark.parametrize(
    "opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF], ids=lambda op: f"op-{op:#x}"
)
def test_reserved_opcode_is_error_1002(opcode: int) -> None:
    """Reserved opcodes fail with 1002 (RFC 6455 5.2)."""
    assert parse(frame(opcode, b"x")) == [("error", 1002)]


@pytest.mark.parametrize(
    ("rsv", "opcode"),
    [(4, OP_TEXT), (2, OP_TEXT), (1, OP_BINARY), (4, OP_PING)],
    ids=["rsv1-text", "rsv2-text", "rsv3-binary", "rsv1-ping"],
)
def test_reserved_bits_without_extension_are_error_1002(rsv: int, opcode: int) -> None:
    """RSV bits set with no extension negotiated fail with 1002 (RFC 6455 5.2)."""
    assert parse(frame(opcode, b"x", rsv=rsv)) == [("error", 1002)]


def test_unmasked_client_frame_is_error_1002() -> None:
    """A client frame without the mask bit fails with 1002 (RFC 6455 5.1)."""
    assert parse(client_frame(OP_TEXT, b"x", mask=False)) == [("error", 1002)]


# -- Close frames ------------------------------------------------------------------------


def test_close_with_code_and_reason_is_reported() -> None:
    """A Close with a code and a UTF-8 reason reports both."""
    events = parse(frame(OP_CLOSE, close_payload(4000, "bye ✓")))
    assert events == [("close", (4000, "bye ✓"))]


def test_empty_close_is_reported_as_1005() -> None:
    """A Close without a body reports 1005, no status received (RFC 6455 7.1.5)."""
    assert parse(frame(OP_CLOSE)) == [("close", (1005, ""))]


def test_close_with_one_byte_body_is_error_1002() -> None:
    """A Close body of one byte cannot hold a code and fails with 1002 (RFC 6455 5.5.1)."""
    assert parse(frame(OP_CLOSE, b"\x03")) == [("error", 1002)]


@pytest.mark.parametrize(
    "code",
    [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999],
    ids=str,
)
def test_valid_close_code_is_reported(code: int) -> None:
    """Every code a peer may send (RFC 6455 7.4.1, 7.4.2) is reported as sent."""
    assert parse(frame(OP_CLOSE, close_payload(code))) == [("close", (code, ""))]


@pytest.mark.parametrize(
    "code",
    [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535],
    ids=str,
)
def test_invalid_close_code_is_error_1002(code: int) -> None:
    """Reserved, must-not-be-sent and unassigned codes fail with 1002 (RFC 6455 7.4)."""
    assert parse(frame(OP_CLOSE, close_payload(code))) == [("error", 1002)]


@pytest.mark.parametrize(
    ("code", "valid"),
    [(999, False), (1000, True), (1004, False), (1006, False), (1011, True)],
    ids=["999", "1000", "1004", "1006", "1011"],
)
def test_is_valid_close_code(code: int, valid: bool) -> None:
    """is_valid_close_code accepts sendable codes and rejects reserved ones."""
    assert is_valid_close_code(code) is valid


def test_close_reason_with_invalid_utf8_is_error_1007() -> None:
    """A Close reason that is not UTF-8 fails with 1007 (RFC 6455 8.1)."""
    assert parse(frame(OP_CLOSE, close_payload(1000, b"\xff"))) == [("error", 1007)]


def test_input_after_close_is_ignored() -> None:
    """Nothing after a Close frame is reported, in the same read or later ones."""
    sink = Sink()
    parser = FrameParser(sink, MAX)
    parser.feed(frame(OP_CLOSE, close_payload(1000)) + frame(OP_TEXT, b"late"))
    parser.feed(frame(OP_TEXT, b"later"))
    assert sink.events == [("close", (1000, ""))]
    assert parser.stopped


def test_input_after_an_error_is_ignored() -> None:
    """After a protocol error the parser reports nothing more, not even a second error."""
    sink = Sink()
    parser = FrameParser(sink, MAX)
    parser.feed(frame(OP_CONTINUATION, b"x") + frame(OP_TEXT, b"a"))
    parser.feed(frame(3, b"x"))
    assert sink.events == [("error", 1002)]


def test_stop_discards_a_partial_frame() -> None:
    """stop() drops buffered input: the rest of a frame fed later is not reported."""
    data = frame(OP_TEXT, b"abc")
    sink = Sink()
    parser = FrameParser(sink, MAX)
    parser.feed(data[:3])
    parser.stop()
    parser.feed(data[3:])
    assert sink.events == []


# -- UTF-8 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xc0\xaf"],
    ids=["invalid-byte", "truncated", "surrogate", "above-max", "overlong"],
)
def test_text_with_invalid_utf8_is_error_1007(payload: bytes) -> None:
    """A text message that is not valid UTF-8 fails with 1007 (RFC 6455 8.1)."""
    assert parse(frame(OP_TEXT, payload)) == [("error", 1007)]


def test_binary_with_invalid_utf8_is_delivered() -> None:
    """Binary messages are not UTF-8 checked."""
    assert parse(frame(OP_BINARY, b"\xff")) == [("message", b"\xff")]


def test_character_split_across_fragments_is_valid() -> None:
    """A multi-byte character split between fragments is reassembled, not rejected."""
    data = "€".encode()
    events = parse(
        frame(OP_TEXT, data[:1], fin=False),
        frame(OP_CONTINUATION, data[1:2], fin=False),
        frame(OP_CONTINUATION, data[2:]),
    )
    assert events == [("message", "€")]


def test_invalid_utf8_in_first_fragment_fails_before_the_message_ends() -> None:
    """Invalid UTF-8 in a non-final fragment fails with 1007 at once (fail fast, RFC 6455 8.1)."""
    assert parse(frame(OP_TEXT, b"ok\xff", fin=False)) == [("error", 1007)]


def test_message_ending_inside_a_character_is_error_1007() -> None:
    """A fragmented text whose final fragment ends mid-character fails with 1007."""
    events = parse(
        frame(OP_TEXT, b"a", fin=False), frame(OP_CONTINUATION, "€".encode()[:2])
    )
    assert events == [("error", 1007)]


# -- size limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit", [125, 126, 65536, 100_000], ids=lambda n: f"limit-{n}"
)
def test_message_of_exactly_max_size_is_accepted(limit: int) -> None:
    """A message of exactly max_payload_length bytes is accepted (the limit is inclusive)."""
    payload = b"m" * limit
    assert parse(frame(OP_BINARY, payload), max_size=limit) == [("message", payload)]


@pytest.mark.parametrize(
    "limit", [125, 126, 65536, 100_000], ids=lambda n: f"limit-{n}"
)
def test_message_one_byte_over_max_size_is_error_1009(limit: int) -> None:
    """A message one byte over max_payload_length fails with 1009."""
    assert parse(frame(OP_BINARY, b"m" * (limit + 1)), max_size=limit) == [
        ("error", 1009)
    ]


def test_fragmented_message_of_exactly_max_size_is_accepted() -> None:
    """Fragments adding up to exactly max_payload_length are accepted."""
    events = parse(
        frame(OP_TEXT, b"a" * 600, fin=False),
        frame(OP_CONTINUATION, b"b" * 424),
        max_size=1024,
    )
    assert events == [("message", "a" * 600 + "b" * 424)]


def test_fragmented_message_one_byte_over_is_error_1009() -> None:
    """Fragments adding up to one byte over max_payload_length fail with 1009."""
    events = parse(
        frame(OP_TEXT, b"a" * 600, fin=False),
        frame(OP_CONTINUATION, b"b" * 425),
        max_size=1024,
    )
    assert events == [("error", 1009)]


def test_oversized_frame_fails_on_its_header_alone() -> None:
    """1009 is reported from the frame header, before any of the payload arrives."""
    header = frame(OP_BINARY, b"x" * 70_000)[:14]  # 2 + 8 length bytes + 4 mask
    assert parse_chunks([header], max_size=65536) == [("error", 1009)]


def test_control_frames_do_not_count_towards_the_message_size() -> None:
    """Pings between fragments do not add to the size of the message around them."""
    events = parse(
        frame(OP_BINARY, b"a" * 1000, fin=False),
        frame(OP_PING, b"p" * 100),
        frame(OP_CONTINUATION, b"b" * 24),
        max_size=1024,
    )
    assert events == [("ping", b"p" * 100), ("message", b"a" * 1000 + b"b" * 24)]


def test_length_with_top_bit_set_is_error_1002() -> None:
    """A 64-bit length with its most significant bit set fails with 1002 (RFC 6455 5.2)."""
    header = bytes((0x82, 0x80 | 127)) + (1 << 63).to_bytes(8, "big") + b"mask"
    assert parse(header, max_size=2**64) == [("error", 1002)]


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 4096, 65537], ids=str)
def test_pure_python_mask_matches_the_compiled_one(size: int) -> None:
    """The pure-Python XOR used without aiohttp's compiled helper unmasks identically."""
    from aiohttp_upgrade._frames import xor_mask

    assert compiled_mask is not None
    payload = bytes(range(256)) * (size // 256 + 1)
    compiled, fallback = bytearray(payload[:size]), bytearray(payload[:size])
    compiled_mask(b"\x01\x80\x7f\xfe", compiled)
    xor_mask(b"\x01\x80\x7f\xfe", fallback)
    assert fallback == compiled
    assert size == 0 or compiled != payload[:size]


# -- UTF-8 checked while a frame is still arriving -----------------------------------

INVALID_TAIL = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"


def events_after_each_read(chunks: Iterable[bytes]) -> list[list[Event]]:
    """Feed reads one by one; return the sink's events after each of them."""
    sink = Sink()
    parser = FrameParser(sink, MAX)
    seen = []
    for chunk in chunks:
        parser.feed(chunk)
        seen.append(list(sink.events))
    return seen


def test_invalid_utf8_fails_before_the_frame_is_complete() -> None:
    """Invalid UTF-8 in a text frame is reported from the read that carries it."""
    data = frame(OP_TEXT, INVALID_TAIL)
    head = len(data) - len(INVALID_TAIL)
    bad_at = head + INVALID_TAIL.index(b"\xed") + 3
    seen = events_after_each_read([data[:bad_at], data[bad_at:]])
    assert seen[0] == [("error", 1007)]


def test_invalid_utf8_in_an_arriving_continuation_fails_fast() -> None:
    """A continuation frame still arriving is checked against the fragments before it."""
    first = frame(OP_TEXT, b"\xce", fin=False)
    rest = frame(OP_CONTINUATION, b"\xba" + INVALID_TAIL[2:])
    bad_at = len(rest) - len(INVALID_TAIL) + 3 + INVALID_TAIL.index(b"\xed")
    seen = events_after_each_read([first, rest[:bad_at], rest[bad_at:]])
    assert seen[1] == [("error", 1007)]


@pytest.mark.parametrize("read_size", [1, 2, 3, 7], ids=lambda n: f"{n}-byte-reads")
def test_valid_text_trickling_in_is_delivered_whole(read_size: int) -> None:
    """Multi-byte characters cut across reads are not mistaken for invalid UTF-8."""
    text = "κόσμε €𝄞 " * 20
    data = frame(OP_TEXT, text[:50].encode(), fin=False) + frame(
        OP_CONTINUATION, text[50:].encode()
    )
    assert parse_chunks(split(data, read_size)) == [("message", text)]


# -- any split of the input ------------------------------------------------------------


def deflated(data: bytes, compressor: Any) -> bytes:
    """One permessage-deflate message body from a context-takeover ``compressor``."""
    body: bytes = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return body[:-4]


@st.composite
def valid_streams(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """Valid client frames (plain, fragmented, compressed, control) and the events due."""
    compressor = zlib.compressobj(wbits=-15)
    stream: list[bytes] = []
    expected: list[Event] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong"]))
        if kind in ("ping", "pong"):
            data = draw(st.binary(max_size=125))
            stream.append(frame(OP_PING if kind == "ping" else OP_PONG, data))
            expected.append((kind, data))
            continue
        message: str | bytes = (
            draw(st.text(max_size=300))
            if kind == "text"
            else draw(st.binary(max_size=300))
        )
        raw = message.encode() if isinstance(message, str) else message
        compress = draw(st.booleans())
        body = deflated(raw, compressor) if compress else raw
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
        parts = [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]
        for i, part in enumerate(parts):
            stream.append(
                frame(
                    (OP_TEXT if kind == "text" else OP_BINARY)
                    if i == 0
                    else OP_CONTINUATION,
                    part,
                    fin=i == len(parts) - 1,
                    rsv=4 if compress and i == 0 else 0,
                )
            )
        expected.append(("message", message))
    if draw(st.booleans()):
        stream.append(frame(OP_CLOSE, close_payload(1000, "bye")))
        expected.append(("close", (1000, "bye")))
    return b"".join(stream), expected


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (modulo its length)."""
    points = sorted({0, len(data), *(c % (len(data) or 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300, deadline=None)
@given(stream=valid_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=40))
def test_any_split_of_a_valid_stream_gives_the_same_events(
    stream: tuple[bytes, list[Event]], cuts: list[int]
) -> None:
    """Valid frames cut into reads anywhere give the events of one whole read."""
    data, expected = stream
    assert parse_chunks([data], deflate=True) == expected
    assert parse_chunks(cut(data, cuts), deflate=True) == expected


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.builds(
                frame,
                st.sampled_from(
                    [OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING]
                ),
                st.one_of(
                    st.binary(max_size=200), st.text(max_size=40).map(str.encode)
                ),
                fin=st.booleans(),
                rsv=st.sampled_from([0, 0, 4]),
            ),
            st.binary(max_size=20),
        ),
        max_size=8,
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=40),
)
def test_any_split_of_any_input_gives_the_same_events(
    pieces: list[bytes], cuts: list[int]
) -> None:
    """Any bytes, valid or not, cut into reads anywhere give the events of one whole read."""
    data = b"".join(pieces)
    assert parse_chunks(cut(data, cuts), deflate=True) == parse_chunks(
        [data], deflate=True
    )
