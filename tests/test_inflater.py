"""The permessage-deflate inflater (RFC 7692 7.2.2) on hand-built message bodies.

A client may end a message's DEFLATE data with a final block (BFINAL set, RFC 7692
7.2.3.4). What may follow it is only the start of the empty stored block that the
appended ``00 00 ff ff`` completes; anything else is invalid data (1007). With
context takeover the next message is inflated against the same LZ77 window.
"""

from __future__ import annotations

import random
import zlib

import pytest

from aiohttp_upgrade._deflate import Inflater
from aiohttp_upgrade._errors import ProtocolError

MAX = 1024 * 1024
TAIL = b"\x00\x00\xff\xff"

RFC_HELLO_BFINAL = bytes.fromhex("f348cdc9c9070000")
"""RFC 7692 7.2.3.4: "Hello" in a final block, then one octet of stored-block header."""

HISTORY = b"the quick brown fox jumps over the lazy dog; " * 20


def finished(data: bytes, zdict: bytes = b"") -> bytes:
    """``data`` as one DEFLATE stream ended with a final block (Z_FINISH), nothing after."""
    z = (
        zlib.compressobj(wbits=-15, zdict=zdict)
        if zdict
        else zlib.compressobj(wbits=-15)
    )
    return z.compress(data) + z.flush()


def flushed(data: bytes, zdict: bytes = b"") -> bytes:
    """``data`` compressed as RFC 7692 7.2.1 says: sync flush, tail removed."""
    z = (
        zlib.compressobj(wbits=-15, zdict=zdict)
        if zdict
        else zlib.compressobj(wbits=-15)
    )
    body = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(TAIL)
    return body[:-4]


def error_code(inflater: Inflater, payload: bytes) -> int:
    with pytest.raises(ProtocolError) as info:
        inflater.inflate(payload)
    return info.value.code


TAKEOVER = [False, True]
TAKEOVER_IDS = ["context-takeover", "no-context-takeover"]


# -- a message ending with a final block -------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        RFC_HELLO_BFINAL,
        finished(b"Hello"),
        flushed(b"Hello") + TAIL + b"\x01",
    ],
    ids=["rfc-7.2.3.4-example", "final-block-alone", "final-empty-stored-block"],
)
@pytest.mark.parametrize("no_takeover", TAKEOVER, ids=TAKEOVER_IDS)
def test_message_ending_with_a_final_block_is_inflated(
    payload: bytes, no_takeover: bool
) -> None:
    """Every way RFC 7692 7.2.1 lets a message end with a final block inflates to its text."""
    assert Inflater(MAX, no_takeover).inflate(payload) == b"Hello"


@pytest.mark.parametrize(
    "payload",
    [
        finished(b"Hello") + b"junk",
        RFC_HELLO_BFINAL + b"\x00",
        finished(b"Hello") + flushed(b"world"),
        finished(b"Hello") + finished(b"world"),
    ],
    ids=["text-junk", "extra-zero-octet", "second-stream", "second-final-stream"],
)
@pytest.mark.parametrize("no_takeover", TAKEOVER, ids=TAKEOVER_IDS)
def test_data_after_the_final_block_is_error_1007(
    payload: bytes, no_takeover: bool
) -> None:
    """Bytes after a final block beyond the empty stored block's header are invalid data (1007)."""
    assert error_code(Inflater(MAX, no_takeover), payload) == 1007


# -- the message after a final block ---------------------------------------------------------


@pytest.mark.parametrize("no_takeover", TAKEOVER, ids=TAKEOVER_IDS)
def test_message_after_a_final_block_is_inflated(no_takeover: bool) -> None:
    """A message compressed on its own after one that ended with a final block is inflated, not empty."""
    inflater = Inflater(MAX, no_takeover)
    assert inflater.inflate(RFC_HELLO_BFINAL) == b"Hello"
    assert inflater.inflate(flushed(b"world")) == b"world"
    assert inflater.inflate(finished(b"again")) == b"again"
    assert inflater.inflate(flushed(b"and again")) == b"and again"


def test_message_after_a_final_block_may_refer_to_the_window() -> None:
    """With context takeover the window survives a final block (RFC 7692 7.2.2)."""
    inflater = Inflater(MAX, no_context_takeover=False)
    assert inflater.inflate(finished(HISTORY)) == HISTORY
    second = flushed(HISTORY, zdict=HISTORY)
    assert len(second) < 20  # it is all back-references into the first message
    assert inflater.inflate(second) == HISTORY


def test_window_spans_several_messages_after_final_blocks() -> None:
    """Back-references reach across messages that each ended with a final block."""
    inflater = Inflater(MAX, no_context_takeover=False)
    first, second = HISTORY[:400], HISTORY[400:]
    assert inflater.inflate(finished(first)) == first
    assert inflater.inflate(finished(second, zdict=first)) == second
    third = flushed(HISTORY, zdict=HISTORY)
    assert inflater.inflate(third) == HISTORY
    assert inflater.inflate(flushed(b"tail")) == b"tail"


def test_message_after_a_final_block_may_refer_to_messages_before_it() -> None:
    """A sync-flushed message, then one ending with a final block: the next may refer to the first (RFC 7692 7.2.2)."""
    inflater = Inflater(MAX, no_context_takeover=False)
    z = zlib.compressobj(wbits=-15)
    body = z.compress(HISTORY) + z.flush(zlib.Z_SYNC_FLUSH)
    assert inflater.inflate(body[:-4]) == HISTORY
    assert inflater.inflate(z.compress(b"x") + z.flush()) == b"x"
    third = flushed(HISTORY, zdict=HISTORY + b"x")
    assert len(third) < 20  # it is all back-references into the first message
    assert inflater.inflate(third) == HISTORY


def test_window_spans_large_and_small_messages_before_a_final_block() -> None:
    """The window primed after a final block is the last 32 KiB over a large message and the small ones after it."""
    inflater = Inflater(MAX, no_context_takeover=False)
    large = random.Random(7).randbytes(40 * 1024)
    small = random.Random(8).randbytes(1000)
    z = zlib.compressobj(wbits=-15)
    for data in (large, small):
        body = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
        assert inflater.inflate(body[:-4]) == data
    assert inflater.inflate(z.compress(b"x") + z.flush()) == b"x"
    window = (large + small + b"x")[-32768:]
    wanted = window[300:1300] + small
    fourth = flushed(wanted, zdict=window)
    assert len(fourth) < 100
    assert inflater.inflate(fourth) == wanted


def test_reference_to_data_never_sent_is_error_1007() -> None:
    """After a final block, a back-reference to data the client never sent is 1007, never wrong or empty data."""
    inflater = Inflater(MAX, no_context_takeover=False)
    assert inflater.inflate(finished(b"x")) == b"x"
    assert error_code(inflater, flushed(HISTORY, zdict=HISTORY + b"x")) == 1007


def test_message_without_a_final_block_keeps_the_stream() -> None:
    """Messages flushed the usual way share one stream: the second refers to the first."""
    inflater = Inflater(MAX, no_context_takeover=False)
    z = zlib.compressobj(wbits=-15)
    for _ in range(3):
        body = z.compress(HISTORY) + z.flush(zlib.Z_SYNC_FLUSH)
        assert inflater.inflate(body[:-4]) == HISTORY


def test_window_after_a_large_message_is_its_last_32_kib() -> None:
    """After a final block ending a 40 KiB message, references almost 32 KiB back resolve."""
    inflater = Inflater(MAX, no_context_takeover=False)
    large = random.Random(15).randbytes(40 * 1024)  # no repeats: references are far
    assert inflater.inflate(finished(large)) == large
    window = large[-32768:]
    # zlib reaches back at most 32 KiB less 262 bytes.
    second = flushed(window[300:1300], zdict=window)
    assert len(second) < 100
    assert inflater.inflate(second) == window[300:1300]
