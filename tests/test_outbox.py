"""The outbox without sockets: Bun's send codes, per-turn flushing, drain, the limit.

A fake transport stands in for the kernel: it takes up to ``kernel_room`` bytes
per write and keeps the rest in its write buffer, as an asyncio transport does.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field

import pytest

from aiohttp_upgrade._deflate import Compressor
from aiohttp_upgrade._frames import OP_BINARY, OP_CLOSE, OP_TEXT, build_frame
from aiohttp_upgrade._outbox import Flusher, Outbox
from aiohttp_upgrade._sendlimits import FLUSH_THRESHOLD, hard_limit

LIMIT = 1000


@dataclass
class FakeTransport:
    """Takes ``kernel_room`` bytes per write into the "kernel"; buffers the rest."""

    kernel_room: int = 1 << 30
    writes: list[bytes] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)
    closing: bool = False
    fail: Exception | None = None
    aborted: bool = False

    def write(self, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.writes.append(data)
        if self.buffer:
            self.buffer += data
            return
        taken = min(len(data), self.kernel_room)
        self.buffer += data[taken:]

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True

    def kernel_drains(self) -> None:
        """The peer read everything: the buffer empties (resume_writing follows)."""
        self.buffer.clear()


@dataclass
class Owner:
    """Records what the outbox reports."""

    drains: int = 0
    dropped_messages: list[object] = field(default_factory=list)
    write_errors: list[Exception] = field(default_factory=list)

    def drained(self) -> None:
        self.drains += 1

    def dropped(self, message: object) -> None:
        self.dropped_messages.append(message)

    def write_failed(self, exc: Exception) -> None:
        self.write_errors.append(exc)


def make(
    transport: FakeTransport | None = None,
    compressor: Compressor | None = None,
    limit: int = LIMIT,
) -> tuple[Outbox, FakeTransport, Owner]:
    transport = transport or FakeTransport()
    owner = Owner()
    return Outbox(transport, Flusher(), limit, compressor, owner), transport, owner


async def end_of_turn() -> None:
    """Return once every callback scheduled so far (the per-turn flush) has run."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_send_to_an_idle_connection_returns_the_length() -> None:
    """A frame onto an empty buffer returns the payload length and is written at turn end."""
    outbox, transport, _ = make()
    assert outbox.send(OP_TEXT, b"hello", False, "hello") == 5
    assert transport.writes == []
    await end_of_turn()
    assert transport.writes == [build_frame(OP_TEXT, b"hello")]


async def test_sends_of_one_turn_go_out_in_one_write() -> None:
    """Every frame queued during one loop turn is written with a single write."""
    outbox, transport, _ = make()
    for i in range(3):
        outbox.send(OP_BINARY, bytes([i]), False)
    await end_of_turn()
    assert transport.writes == [
        b"".join(build_frame(OP_BINARY, bytes([i])) for i in range(3))
    ]


async def test_codes_go_from_length_to_minus_one_to_zero() -> None:
    """Once the kernel is full a send returns -1 (queued); once more than the limit
    waited at the start of a turn, 0 (dropped)."""
    outbox, _transport, owner = make(FakeTransport(kernel_room=0))
    outbox.write_now = True  # write at once, as inside an async hook
    payload = b"x" * 400
    codes = []
    for _ in range(3):
        codes.append(outbox.send(OP_BINARY, payload, False, payload))
        await end_of_turn()
    assert codes == [-1, -1, -1]  # 405, 810, 1215 buffered: under the limit each time
    assert outbox.buffered > LIMIT
    assert outbox.send(OP_BINARY, payload, False, payload) == 0
    assert owner.dropped_messages == [payload]


async def test_a_burst_in_one_turn_is_not_dropped() -> None:
    """Sends of one loop turn are never dropped for what that turn queued, however
    much; the next turn's are, if the client took too little of it."""
    outbox, transport, owner = make(FakeTransport(kernel_room=100))
    payload = b"x" * 400
    codes = [outbox.send(OP_BINARY, payload, False, payload) for _ in range(100)]
    assert 0 not in codes
    await end_of_turn()
    assert len(transport.buffer) > LIMIT
    assert outbox.send(OP_BINARY, payload, False, b"late") == 0
    assert owner.dropped_messages == [b"late"]


async def test_the_limit_counts_what_the_client_has_not_taken() -> None:
    """After a burst, a send in a later turn is accepted once the client took the
    backlog down to the limit."""
    outbox, transport, _ = make(FakeTransport(kernel_room=0))
    payload = b"x" * 400
    for _ in range(10):
        outbox.send(OP_BINARY, payload, False)
    await end_of_turn()
    del transport.buffer[: len(transport.buffer) - LIMIT]  # the client read some
    assert outbox.send(OP_BINARY, payload, False) == -1


async def test_the_limit_looks_again_each_turn_without_the_flusher() -> None:
    """A backlog left by a flush the flusher did not make (the end of a read) is
    still seen by the next turn's send."""
    outbox, _transport, _ = make(FakeTransport(kernel_room=0))
    payload = b"x" * 2 * LIMIT
    outbox.held = True  # as during Connection.data_received
    assert outbox.send(OP_BINARY, payload, False) == len(payload)
    outbox.held = False
    outbox.flush()  # the end of the read: the kernel took nothing
    await end_of_turn()
    assert outbox.send(OP_BINARY, b"x", False) == 0


async def test_one_turn_cannot_buffer_past_the_hard_limit() -> None:
    """Within one held read, frames past hard_limit(limit) buffered bytes are dropped:
    200 x 1 MiB against a 256 KiB limit buffer at most 64 MiB and one frame."""
    limit = 256 * 1024
    outbox, _transport, owner = make(FakeTransport(kernel_room=0), limit=limit)
    outbox.held = True  # as during Connection.data_received
    payload = bytes(1 << 20)
    codes = [outbox.send(OP_BINARY, payload, False, seq) for seq in range(200)]
    accepted = 200 - codes.count(0)
    assert hard_limit(limit) == 64 * 1024 * 1024
    assert outbox.buffered <= hard_limit(limit) + len(payload) + 10  # one frame
    assert codes == [-1] * accepted + [0] * (200 - accepted)
    assert owner.dropped_messages == list(range(accepted, 200))


def test_the_hard_limit_is_four_times_the_limit_or_64_mib() -> None:
    """hard_limit is max(4 x backpressure_limit, 64 MiB)."""
    assert hard_limit(1024) == 64 * 1024 * 1024
    assert hard_limit(100 * 1024 * 1024) == 400 * 1024 * 1024


async def test_a_dropped_message_is_not_written() -> None:
    """A message dropped at the limit never reaches the transport."""
    outbox, transport, _ = make(FakeTransport(kernel_room=0), limit=10)
    outbox.write_now = True
    outbox.send(OP_BINARY, b"a" * 20, False)
    await end_of_turn()
    written = b"".join(transport.writes)
    assert outbox.send(OP_BINARY, b"dropped", False) == 0
    assert b"".join(transport.writes) == written


async def test_drain_is_reported_exactly_once_per_episode() -> None:
    """After -1, drained() comes once, when the buffer is empty, however often the
    transport says it is writable."""
    outbox, transport, owner = make(FakeTransport(kernel_room=3))
    outbox.write_now = True
    assert outbox.send(OP_BINARY, b"0123456789", False) == -1
    assert outbox.send(OP_BINARY, b"more", False) == -1
    outbox.writable()  # resume_writing before the buffer is empty: nothing yet
    assert owner.drains == 0
    transport.kernel_drains()
    outbox.writable()
    outbox.writable()
    assert owner.drains == 1
    transport.kernel_room = 1 << 30
    assert outbox.send(OP_BINARY, b"again", False) == 5  # a new episode starts clean
    outbox.writable()
    assert owner.drains == 1


async def test_drain_waits_for_frames_still_pending_in_the_turn() -> None:
    """A writable transport does not drain while frames wait for the turn's flush;
    the flush that empties them reports it."""
    outbox, transport, owner = make(FakeTransport(kernel_room=2))
    outbox.write_now = True
    assert outbox.send(OP_BINARY, b"abcdef", False) == -1
    outbox.write_now = False
    transport.kernel_drains()
    assert outbox.send(OP_BINARY, b"xy", False) == 2  # queued for the turn's flush
    outbox.writable()
    assert owner.drains == 0
    transport.kernel_room = 1 << 30
    await end_of_turn()  # the flush writes it all, straight to the kernel
    await end_of_turn()  # and looks at the drain once written
    assert owner.drains == 1


async def test_a_large_burst_is_written_at_once() -> None:
    """Pending output reaching FLUSH_THRESHOLD is written without waiting for turn end."""
    outbox, transport, _ = make(limit=FLUSH_THRESHOLD * 4)
    chunk = b"z" * 1024
    for _ in range(FLUSH_THRESHOLD // len(chunk) + 1):
        outbox.send(OP_BINARY, chunk, False)
    assert transport.writes != []


async def test_control_frames_pass_the_limit() -> None:
    """A Close queued past the limit is still written; data after close() is dropped."""
    outbox, transport, owner = make(FakeTransport(kernel_room=0), limit=5)
    outbox.write_now = True
    outbox.send(OP_BINARY, b"0123456789", False)
    outbox.close()
    assert outbox.send(OP_BINARY, b"late", False, b"late") == 0
    close = build_frame(OP_CLOSE, b"\x03\xe8")
    outbox.enqueue_control(close)
    outbox.flush()
    assert transport.writes[-1] == close
    assert owner.dropped_messages == []  # a closed outbox drops silently


async def test_a_failing_write_is_reported_not_raised() -> None:
    """transport.write raising goes to the owner; flush() itself never raises."""
    error = OSError("broken pipe")
    outbox, _transport, owner = make(FakeTransport(fail=error))
    outbox.send(OP_TEXT, b"x", False)
    await end_of_turn()
    assert owner.write_errors == [error]


async def test_without_an_owner_a_failing_write_aborts() -> None:
    """An outbox with no owner aborts the transport when a write fails."""
    transport = FakeTransport(fail=OSError("reset"))
    outbox = Outbox(transport, Flusher(), LIMIT)
    outbox.send(OP_TEXT, b"x", False)
    await end_of_turn()
    assert transport.aborted


def compressor() -> Compressor:
    return Compressor(window_bits=15, level=6, no_context_takeover=True)


async def test_compressed_send_is_deflated_with_rsv1() -> None:
    """compress=True with a compressor sends an RSV1 frame that inflates to the payload."""
    outbox, transport, _ = make(compressor=compressor())
    payload = b"compress me " * 20
    assert outbox.send(OP_TEXT, payload, True) == len(payload)
    await end_of_turn()
    frame = transport.writes[0]
    assert frame[0] == 0x80 | 0x40 | OP_TEXT
    body = frame[2:] if frame[1] < 126 else frame[4:]
    assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == payload


async def test_a_message_about_to_be_dropped_is_not_compressed() -> None:
    """Over the limit, a compressed send is dropped before any compression work."""
    calls: list[bytes] = []

    class Counting(Compressor):
        def compress(self, payload: bytes) -> bytes:
            calls.append(payload)
            return super().compress(payload)

    counting = Counting(window_bits=15, level=6, no_context_takeover=False)
    outbox, _, owner = make(FakeTransport(kernel_room=0), compressor=counting, limit=5)
    outbox.write_now = True
    outbox.send(OP_BINARY, b"0123456789", False)
    await end_of_turn()
    assert outbox.send(OP_BINARY, b"payload", True, b"payload") == 0
    assert calls == []
    assert owner.dropped_messages == [b"payload"]


@pytest.mark.parametrize("sockets", [2, 5], ids=["2-sockets", "5-sockets"])
async def test_publish_deflates_once_for_all_shareable_compressors(
    sockets: int,
) -> None:
    """Outboxes whose compressors keep no context share one compressed frame."""
    shared: dict[tuple[int, int], bytes] = {}
    payload = b"shared " * 50
    frame = build_frame(OP_TEXT, payload)
    outboxes = [make(compressor=compressor())[0] for _ in range(sockets)]
    for outbox in outboxes:
        outbox.send(OP_TEXT, payload, True, None, frame, shared)
    assert len(shared) == 1
