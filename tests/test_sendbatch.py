"""The writes of a flush to many sockets sent in one system call (``_sendbatch``).

The reference calls (``_sendring``) are tested as Python on socket pairs: what a
send returns, in order. The batch, and our transport with it, need the compiled
twin and a kernel with io_uring: those tests are skipped elsewhere (pure Python
never batches). The last ones publish through a real server.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from aiohttp_upgrade import ServerWebSocket, WebSocketHandler, _sendbatch
from aiohttp_upgrade import _sendring as reference
from aiohttp_upgrade._poller import Poller
from aiohttp_upgrade._sendbatch import BATCH_MIN, BatchWriter, SendBatch
from aiohttp_upgrade._sendlimits import FLUSH_THRESHOLD
from aiohttp_upgrade._speedups import COMPILED
from aiohttp_upgrade._tcp import SocketTransport

from .conftest import ConnectRaw, ServeFactory, connection_of
from .test_tcp import Peer, read_all
from .wire import OP_BINARY, OP_TEXT

GONE = (errno.EPIPE, errno.ECONNRESET)


def batching_works() -> bool:
    """Whether a batch starts here (compiled, a kernel with io_uring)."""
    batch = SendBatch()
    started = batch.start()
    batch.finish()
    return started


needs_batching = pytest.mark.skipif(
    not batching_works(), reason="no send batch here (pure Python or no io_uring)"
)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Ten non-blocking socket pairs: (ours, theirs)."""
    made = [socket.socketpair() for _ in range(10)]
    for ours, theirs in made:
        ours.setblocking(False)
        theirs.setblocking(False)
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def fill(sock: socket.socket) -> None:
    """Send until the kernel takes nothing more."""
    with pytest.raises(BlockingIOError):
        while True:
            sock.send(b"x" * 65536)


def received(sock: socket.socket) -> bytes:
    data = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    return bytes(data)


# -- the reference ---------------------------------------------------------------


def test_reference_sends_in_order_and_tells_each_result(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    (ours, theirs), (full, _), (gone, peer) = pairs[:3]
    fill(full)
    peer.close()
    assert reference.ring_open() is False  # Python never batches
    for fd, data in [(ours, b"one"), (full, b"two"), (ours, b"three"), (gone, b"x")]:
        assert reference.ring_add(fd.fileno(), data)
    assert reference.ring_submit() == 4
    assert reference.ring_result(0) == 3
    assert reference.ring_result(1) == -errno.EAGAIN
    assert reference.ring_result(2) == 5
    assert -reference.ring_result(3) in GONE
    assert received(theirs) == b"onethree"


def test_reference_ring_is_full_at_its_entries() -> None:
    a, b = socket.socketpair()
    with a, b:
        for _ in range(reference.RING_ENTRIES):
            assert reference.ring_add(a.fileno(), b"")
        assert not reference.ring_add(a.fileno(), b"")
        reference.ring_close()
        assert reference.ring_add(a.fileno(), b"")
        reference.ring_close()


def test_the_environment_turns_batching_off() -> None:
    script = (
        "from aiohttp_upgrade._sendbatch import SendBatch; print(SendBatch().start())"
    )
    env = os.environ | {"AIOHTTP_UPGRADE_NO_IO_URING": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True
    )
    assert result.stdout.strip() == "False", result.stderr


# -- the batch --------------------------------------------------------------------


class Writer(BatchWriter):
    """Records what the batch tells it."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.failed: list[OSError] = []
        self.fail = fail

    def batch_sent(self, data: bytes, sent: int) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((data, sent))

    def batch_failed(self, exc: OSError) -> None:
        self.failed.append(exc)


@needs_batching
def test_batch_sends_every_write_and_tells_each_writer(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    (ours, theirs), (full, _), (gone, peer) = pairs[:3]
    fill(full)
    peer.close()
    writers = [Writer(), Writer(), Writer()]
    batch = SendBatch()
    assert batch.start()
    for writer, sock, data in zip(
        writers, (ours, full, gone), (b"hello", b"refused", b"lost"), strict=True
    ):
        assert batch.add(writer, sock.fileno(), data)
    assert received(theirs) == b""  # nothing is sent before finish()
    assert batch.finish() is True  # one write was not taken whole
    assert writers[0].sent == [(b"hello", 5)]
    assert writers[1].sent == [(b"refused", 0)]
    assert writers[2].sent == [] and writers[2].failed[0].errno in GONE
    assert isinstance(writers[2].failed[0], ConnectionError)
    assert received(theirs) == b"hello"
    assert (batch.batches, batch.sends) == (1, 3)
    assert not batch.active


@needs_batching
def test_batch_larger_than_the_ring_submits_to_make_room(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    writer = Writer()
    batch = SendBatch()
    assert batch.start()
    for n in range(1100):
        ours, _ = pairs[n % len(pairs)]
        assert batch.add(writer, ours.fileno(), b"%d," % n)
    assert batch.finish() is False
    assert batch.batches == 2 and batch.sends == 1100
    assert [sent for _, sent in writer.sent] == [len(data) for data, _ in writer.sent]
    for index, (_, theirs) in enumerate(pairs):
        expected = b"".join(b"%d," % n for n in range(index, 1100, len(pairs)))
        assert received(theirs) == expected


@needs_batching
def test_a_writer_that_raises_costs_the_others_nothing(
    pairs: list[tuple[socket.socket, socket.socket]], caplog: pytest.LogCaptureFixture
) -> None:
    broken, fine = Writer(fail=RuntimeError("bug")), Writer()
    batch = SendBatch()
    assert batch.start()
    batch.add(broken, pairs[0][0].fileno(), b"a")
    batch.add(fine, pairs[1][0].fileno(), b"b")
    with caplog.at_level(logging.ERROR, "aiohttp_upgrade"):
        batch.finish()
    assert fine.sent == [(b"b", 1)]
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [broken.fail]


@pytest.mark.skipif(COMPILED, reason="the compiled batch calls the ring's C twins")
def test_what_the_ring_did_not_make_is_sent_once_by_the_batch(
    pairs: list[tuple[socket.socket, socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ring that refuses a submission (a fault no test can cause on a working
    kernel, so the pure batch is given a refusing ring): a send it never took is
    made by the batch itself, one it took without completing is reported failed,
    never sent twice."""
    told = [-errno.ECANCELED, -errno.EIO, 1]
    monkeypatch.setattr(_sendbatch, "ring_open", lambda: True)
    monkeypatch.setattr(_sendbatch, "ring_submit", lambda: 1)
    monkeypatch.setattr(_sendbatch, "ring_result", told.__getitem__)
    writers = [Writer(), Writer(), Writer()]
    batch = SendBatch()
    assert batch.start()
    for writer, (ours, _), data in zip(
        writers, pairs[:3], (b"made", b"lost", b"x"), strict=True
    ):
        assert batch.add(writer, ours.fileno(), data)
    reference.ring_close()  # the refusing ring sent nothing of what it holds
    batch.finish()
    assert writers[0].sent == [(b"made", 4)]
    assert writers[1].failed[0].errno == errno.EIO
    assert [received(theirs) for _, theirs in pairs[:2]] == [b"made", b""]
    assert (batch.batches, batch.sends) == (1, 1)


# -- our transport with the batch ---------------------------------------------------


def on_a_pair(poller: Poller, protocol: Peer) -> tuple[SocketTransport, socket.socket]:
    """Our transport on one end of a new socket pair; the other end."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    return SocketTransport(poller, ours, protocol, {"socket": ours}), theirs


@pytest.fixture
async def batched() -> AsyncIterator[tuple[SocketTransport, Peer, socket.socket]]:
    """Our transport on a socket pair, its poller's batch started."""
    peer = Peer()
    poller = Poller(asyncio.get_running_loop())
    transport, theirs = on_a_pair(poller, peer)
    assert poller.batch.start()
    yield transport, peer, theirs
    poller.batch.finish()
    transport.abort()
    await peer.lost
    theirs.close()


@needs_batching
async def test_a_write_waits_in_the_batch_and_the_rest_is_buffered(
    batched: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = batched
    transport.set_write_buffer_limits(high=0)
    big = bytes(range(256)) * (8 * 4096)  # 8 MiB: more than the pair holds
    transport.write(big)
    assert transport.get_write_buffer_size() == 0  # not sent yet
    assert transport.batch.finish() is True
    assert 0 < transport.get_write_buffer_size() < len(big)
    assert peer.events == ["pause_writing"]
    transport.write(b"after")  # behind what is buffered, batch or not
    assert await read_all(theirs, len(big) + 5) == big + b"after"
    await peer.until(lambda: "resume_writing" in peer.events)


@needs_batching
async def test_a_second_write_sends_the_batched_one_first(
    batched: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, _, theirs = batched
    transport.write(b"first,")
    transport.write(bytearray(b"second,"))  # not bytes: sent at once, after
    transport.write(b"third")
    assert transport.batch.batches == 1  # the second write submitted the first
    transport.batch.finish()
    assert await read_all(theirs, 18) == b"first,second,third"


class WritesElsewhere(Peer):
    """A protocol whose ``pause_writing`` writes to another transport."""

    def __init__(self, other: SocketTransport | None = None) -> None:
        super().__init__()
        self.other = other

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.other is not None:
            self.other.write(b"second")


@needs_batching
async def test_a_callback_that_writes_waits_for_its_batched_write_first() -> None:
    """A write made while the batch tells its results (here from the first
    transport's ``pause_writing``) goes after the writer's own batched write."""
    poller = Poller(asyncio.get_running_loop())
    second, second_peer = on_a_pair(poller, Peer())
    protocol = WritesElsewhere(second)
    first, first_peer = on_a_pair(poller, protocol)
    first.set_write_buffer_limits(high=0)
    big = b"x" * (8 * 1024 * 1024)
    assert poller.batch.start()
    first.write(big)  # not taken whole: pause_writing writes to the second
    second.write(b"first,")
    poller.batch.finish()
    assert protocol.events == ["pause_writing"]
    assert await read_all(second_peer, 12) == b"first,second"
    assert await read_all(first_peer, len(big)) == big
    for transport in (first, second):
        transport.abort()
    for sock in (first_peer, second_peer):
        sock.close()


@needs_batching
async def test_a_failed_batched_write_closes_the_transport(
    batched: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = batched
    theirs.close()
    transport.write(b"into the void")
    transport.write(b"and more")  # sends the first, which fails: this one is dropped
    assert transport.is_closing() and transport.batch.batches == 1
    assert transport.batch.finish() is False  # nothing was left queued
    exc = await peer.lost
    assert isinstance(exc, OSError) and exc.errno in GONE


@needs_batching
async def test_close_and_write_eof_send_the_batched_write_first(
    batched: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = batched
    transport.write(b"last words")
    transport.write_eof()
    assert transport.batch.batches == 1
    transport.close()
    await peer.lost
    assert await read_all(theirs, 100) == b"last words"


# -- through a server -------------------------------------------------------------

TOPIC = "all"


class Room(WebSocketHandler[Any]):
    """Subscribes each socket; "go" publishes the payload the test set."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sockets: list[ServerWebSocket[Any]] = []
        self.opened = asyncio.Event()
        self.expected = 0
        self.payload = b""

    def open(self, ws: ServerWebSocket[Any]) -> None:
        ws.subscribe(TOPIC)
        self.sockets.append(ws)
        if len(self.sockets) == self.expected:
            self.opened.set()

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        if message == "go":
            self.server.publish(TOPIC, self.payload)


@needs_batching
async def test_a_publish_to_many_goes_through_the_batch_whole(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A publish to more than BATCH_MIN sockets is written by one batch (a frame
    of FLUSH_THRESHOLD or more would be written at once, by each socket)."""
    room = Room()
    room.expected = count = BATCH_MIN + 6
    room.payload = os.urandom(FLUSH_THRESHOLD // 2)
    served = await serve(room)
    clients = [await connect_raw(served.port) for _ in range(count)]
    async with asyncio.timeout(10):
        await room.opened.wait()
    transport = connection_of(room.sockets[0]).transport
    assert isinstance(transport, SocketTransport)  # adopted: ours
    batch = transport.batch
    sends = batch.sends
    await clients[0].send(OP_TEXT, b"go")
    for client in clients:
        fin, opcode, payload = await client.recv()
        assert (fin, opcode, payload == room.payload) == (True, OP_BINARY, True)
    # All but the publisher's own socket, which writes when its read is handled.
    assert batch.sends - sends == count - 1
