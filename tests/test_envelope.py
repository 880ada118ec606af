"""The envelope a publish crosses Redis in: encoded and decoded without sockets."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiohttp_upgrade._envelope import (
    HEADER_SIZE,
    RECORD_HEADER_SIZE,
    MalformedEnvelope,
    Message,
    Record,
    decode_envelope,
    encode_envelope,
    envelope_header,
    new_origin,
    pack_envelopes,
)
from aiohttp_upgrade._frames import OP_BINARY, OP_TEXT

ORIGIN = b"\x01\x02\x03\x04\x05\x06\x07\x08"

record_strategy = st.one_of(
    st.tuples(st.just(OP_TEXT), st.text().map(str.encode), st.booleans()),
    st.tuples(st.just(OP_BINARY), st.binary(), st.booleans()),
)
records_strategy = st.lists(record_strategy, min_size=1, max_size=8)
messages_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "\u00e9"]), record_strategy).map(
        lambda pair: (pair[0], *pair[1])
    ),
    max_size=20,
)


@given(records_strategy)
def test_records_round_trip(records: list[Record]) -> None:
    """Any sequence of text and binary records decodes to exactly what was encoded."""
    assert decode_envelope(encode_envelope(ORIGIN, records)) == (ORIGIN, records)


@given(messages_strategy, st.integers(1, 64))
def test_packed_envelopes_round_trip(messages: list[Message], max_bytes: int) -> None:
    """Packed envelopes decode, in order, to every message with its topic, from
    the sender's origin, and report the payload bytes packed."""
    envelopes, total = pack_envelopes(envelope_header(ORIGIN), messages, max_bytes)
    unpacked: list[Message] = []
    for topic, envelope in envelopes:
        origin, records = decode_envelope(envelope)
        assert origin == ORIGIN
        unpacked += [(topic, *record) for record in records]
    assert unpacked == messages
    assert total == sum(len(message[2]) for message in messages)


@given(messages_strategy, st.integers(1, 64))
def test_packed_envelopes_keep_to_the_size_limit(
    messages: list[Message], max_bytes: int
) -> None:
    """An envelope of several messages is cut before a payload that would take
    it past ``max_bytes`` (its last record header aside); one message may be larger."""
    envelopes, _ = pack_envelopes(envelope_header(ORIGIN), messages, max_bytes)
    for _, envelope in envelopes:
        if len(decode_envelope(envelope)[1]) > 1:
            assert len(envelope) - RECORD_HEADER_SIZE <= max_bytes


@given(messages_strategy)
def test_one_envelope_per_run_of_a_topic(messages: list[Message]) -> None:
    """Without a size limit in the way, each run of consecutive messages to one
    topic travels in exactly one envelope."""
    envelopes, _ = pack_envelopes(envelope_header(ORIGIN), messages, 1 << 30)
    runs = [
        topic
        for index, (topic, *_) in enumerate(messages)
        if index == 0 or messages[index - 1][0] != topic
    ]
    assert [topic for topic, _ in envelopes] == runs


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_but_malformed(data: bytes) -> None:
    """Random bytes either decode or raise MalformedEnvelope, nothing else."""
    with contextlib.suppress(MalformedEnvelope):
        decode_envelope(data)


@given(records_strategy, st.data())
def test_any_truncation_is_rejected(records: list[Record], data: st.DataObject) -> None:
    """An envelope cut anywhere inside a record is rejected as a whole."""
    whole = encode_envelope(ORIGIN, records)
    boundaries = set()
    position = HEADER_SIZE
    for _, payload, _ in records:
        position += RECORD_HEADER_SIZE + len(payload)
        boundaries.add(position)
    cut = data.draw(st.integers(0, len(whole) - 1))
    if cut in boundaries:
        return  # a shorter but valid envelope
    with pytest.raises(MalformedEnvelope):
        decode_envelope(whole[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"AU\x01" + ORIGIN,  # no record
        b"AU\x02" + ORIGIN + b"\x01\x00\x00\x00\x00",  # version 2
        b"XX\x01" + ORIGIN + b"\x01\x00\x00\x00\x00",  # magic
        b"AU\x01" + ORIGIN + b"\x00\x00\x00\x00\x00",  # continuation opcode
        b"AU\x01" + ORIGIN + b"\x08\x00\x00\x00\x00",  # close opcode
        b"AU\x01" + ORIGIN + b"\x41\x00\x00\x00\x00",  # a reserved flag bit
        b"AU\x01" + ORIGIN + b"\x02\x00\x00\x00\x05abc",  # length past the end
        b"AU\x01" + ORIGIN + b"\x01\x00\x00\x00\x01\xff",  # text not UTF-8
        b"AU\x01" + ORIGIN + b"\x02\x00\x00\x00\x00\x02",  # trailing garbage
        pickle.dumps({"opcode": 1, "payload": b"x"}),
    ],
    ids=[
        "empty",
        "no-record",
        "version",
        "magic",
        "continuation",
        "close",
        "reserved-bit",
        "too-long",
        "bad-utf8",
        "trailing",
        "pickle",
    ],
)
def test_malformed_envelopes_are_rejected(data: bytes) -> None:
    """Each kind of malformed or forged envelope raises MalformedEnvelope."""
    with pytest.raises(MalformedEnvelope):
        decode_envelope(data)


def test_compress_flag_and_opcode_survive() -> None:
    """The compress request and the opcode of each record are kept apart."""
    records = [(OP_TEXT, b"t", True), (OP_BINARY, b"b", False), (OP_BINARY, b"", True)]
    assert decode_envelope(encode_envelope(ORIGIN, records))[1] == records


def test_origins_are_random_and_sized() -> None:
    """Each broker gets its own 8-byte origin; a wrong-sized one is refused."""
    assert new_origin() != new_origin()
    assert len(new_origin()) == 8
    with pytest.raises(ValueError, match="8 bytes"):
        envelope_header(b"short")
