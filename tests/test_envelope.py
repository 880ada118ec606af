"""The envelope a publish crosses Redis in: encoded and decoded without sockets."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiohttp_upgrade.envelope import (
    HEADER_SIZE,
    MalformedEnvelope,
    decode_envelope,
    envelope_header,
    new_origin,
    record_header,
)

ORIGIN = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def encode(origin: bytes, records: list[tuple[int, bytes, bool]]) -> bytes:
    parts = [envelope_header(origin)]
    for opcode, payload, compress in records:
        parts += [record_header(opcode, len(payload), compress), payload]
    return b"".join(parts)


records_strategy = st.lists(
    st.one_of(
        st.tuples(st.just(1), st.text().map(str.encode), st.booleans()),
        st.tuples(st.just(2), st.binary(), st.booleans()),
    ),
    min_size=1,
    max_size=8,
)


@given(records_strategy)
def test_records_round_trip(records: list[tuple[int, bytes, bool]]) -> None:
    """Any sequence of text and binary records decodes to exactly what was encoded."""
    assert decode_envelope(encode(ORIGIN, records)) == (ORIGIN, records)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_but_malformed(data: bytes) -> None:
    """Random bytes either decode or raise MalformedEnvelope, nothing else."""
    with contextlib.suppress(MalformedEnvelope):
        decode_envelope(data)


@given(records_strategy, st.data())
def test_any_truncation_is_rejected(
    records: list[tuple[int, bytes, bool]], data: st.DataObject
) -> None:
    """An envelope cut anywhere inside a record is rejected as a whole."""
    whole = encode(ORIGIN, records)
    boundaries = set()
    position = HEADER_SIZE
    for _, payload, _ in records:
        position += 5 + len(payload)
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
    records = [(1, b"t", True), (2, b"b", False), (2, b"", True)]
    assert decode_envelope(encode(ORIGIN, records))[1] == records


def test_origins_are_random_and_sized() -> None:
    """Each broker gets its own 8-byte origin; a wrong-sized one is refused."""
    assert new_origin() != new_origin()
    assert len(new_origin()) == 8
    with pytest.raises(ValueError, match="8 bytes"):
        envelope_header(b"short")
