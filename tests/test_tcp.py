"""Our own plain-TCP transport (``_tcp.SocketTransport``): asyncio's semantics on
real sockets.

The socket-level tests run through it on asyncio's loop already; these pin the
transport's own contract on a socket pair (partial writes, flow control, EOF,
close, abort, errors) and when the server adopts it (plain TCP on asyncio's
selector loop only).
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiohttp_upgrade._adopt import adopt
from aiohttp_upgrade._poller import Poller
from aiohttp_upgrade._speedups import COMPILED
from aiohttp_upgrade._tcp import SocketTransport

from .conftest import Echo, Recorder, ServeFactory, connection_of
from .wire import OP_TEXT, client_frame, connect, read_frame

BIG = 8 * 1024 * 1024  # more than a socket pair's buffers hold


class Peer(asyncio.BufferedProtocol):
    """A protocol that records what the transport tells it."""

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(64 * 1024))
        self.data = bytearray()
        self.events: list[str] = []
        self.lost: asyncio.Future[Exception | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.eof = asyncio.get_running_loop().create_future()
        self.fail_with: Exception | None = None
        self._changed = asyncio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked each time an event comes."""
        async with asyncio.timeout(10):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def _note(self, event: str) -> None:
        self.events.append(event)
        self._changed.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.data += self.buffer[:nbytes]
        self._changed.set()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self._changed.set()

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        self.eof.set_result(None)
        return None

    def pause_writing(self) -> None:
        self._note("pause_writing")

    def resume_writing(self) -> None:
        self._note("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("connection_lost")
        self.lost.set_result(exc)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SocketTransport, Peer, socket.socket]]:
    """Our transport on one end of a socket pair; the other end, blocking-free,
    for the test to read and write."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    peer = Peer()
    poller = Poller(asyncio.get_running_loop())
    transport = SocketTransport(poller, ours, peer, {"socket": ours})
    yield transport, peer, theirs
    transport.abort()
    await peer.lost
    theirs.close()


async def read_all(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 20):
        data += chunk
    return bytes(data)


async def test_reads_go_to_the_protocol_and_eof_closes(
    pair: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = pair
    theirs.send(b"hello")
    theirs.shutdown(socket.SHUT_WR)
    await peer.lost
    assert bytes(peer.data) == b"hello"
    assert peer.events == ["eof", "connection_lost"]
    assert transport.is_closing()


async def test_what_the_kernel_refuses_is_buffered_then_written_in_order(
    pair: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = pair
    transport.set_write_buffer_limits(high=0)
    payload = bytes(range(256)) * (BIG // 256)
    transport.write(payload[: BIG // 2])
    transport.write(bytearray(payload[BIG // 2 :]))
    assert transport.get_write_buffer_size() > 0
    assert peer.events == ["pause_writing"]
    assert await read_all(theirs, BIG) == payload
    # resume_writing comes once everything is written: the buffer is empty then.
    await peer.until(lambda: "resume_writing" in peer.events)
    assert transport.get_write_buffer_size() == 0
    assert peer.events == ["pause_writing", "resume_writing"]


async def test_close_writes_the_buffer_first(
    pair: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = pair
    payload = b"x" * BIG
    transport.write(payload)
    transport.close()
    assert not peer.lost.done()
    assert await read_to_eof(theirs) == payload
    assert await peer.lost is None
    assert peer.events.count("connection_lost") == 1


async def test_abort_drops_the_buffer_and_reports_once(
    pair: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = pair
    transport.write(b"y" * BIG)
    transport.abort()
    transport.abort()
    transport.close()
    assert await peer.lost is None
    received = await read_to_eof(theirs)
    assert len(received) < BIG
    assert peer.events.count("connection_lost") == 1


async def test_write_eof_waits_for_the_buffer(
    pair: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = pair
    assert transport.can_write_eof()
    transport.write(b"z" * BIG)
    transport.write_eof()
    with pytest.raises(RuntimeError, match="write_eof"):
        transport.write(b"more")
    assert await read_to_eof(theirs) == b"z" * BIG
    # Half-closed only: the peer can still send.
    theirs.send(b"still open")
    await peer.until(lambda: peer.data == b"still open")
    assert not peer.lost.done()


async def test_pause_and_resume_reading(
    pair: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, theirs = pair
    transport.pause_reading()
    assert not transport.is_reading()
    theirs.send(b"held")
    for _ in range(20):  # loop turns in which a read would have come
        await asyncio.sleep(0)
    assert peer.data == b""
    transport.resume_reading()
    assert transport.is_reading()
    await peer.until(lambda: peer.data == b"held")


async def test_a_protocol_that_raises_is_reported_and_closed(
    pair: tuple[SocketTransport, Peer, socket.socket],
    loop_errors: list[dict[str, Any]],
) -> None:
    transport, peer, theirs = pair
    peer.fail_with = ValueError("broken protocol")
    theirs.send(b"boom")
    exc = await peer.lost
    assert isinstance(exc, ValueError)
    assert [ctx["exception"] for ctx in loop_errors] == [exc]
    assert loop_errors[0]["transport"] is transport


async def test_a_reset_peer_ends_the_connection_quietly(
    pair: tuple[SocketTransport, Peer, socket.socket],
    loop_errors: list[dict[str, Any]],
) -> None:
    transport, peer, theirs = pair
    theirs.close()
    for _ in range(64):  # writes until the kernel reports the peer gone
        transport.write(b"w" * 65536)
        if peer.lost.done():
            break
        await asyncio.sleep(0)
    assert isinstance(await peer.lost, OSError) or peer.events[0] == "eof"
    assert loop_errors == []


async def test_every_kind_of_buffer_is_written_as_the_socket_would(
    pair: tuple[SocketTransport, Peer, socket.socket],
    loop_errors: list[dict[str, Any]],
) -> None:
    """bytes, bytearray and views go out whole (the compiled transport sends them
    from C); a buffer the socket cannot send fails as its ``send`` does."""
    transport, peer, theirs = pair
    data = bytearray(b"0123456789")
    transport.write(b"ab")
    transport.write(data)
    transport.write(memoryview(data)[2:4])
    assert await read_all(theirs, 14) == b"ab012345678923"
    transport.write(memoryview(b"abcdef")[::2])  # not contiguous
    assert isinstance(await peer.lost, (TypeError, BufferError))
    assert len(loop_errors) == 1


async def test_a_read_into_what_the_socket_cannot_fill_fails_as_it_would(
    pair: tuple[SocketTransport, Peer, socket.socket],
    loop_errors: list[dict[str, Any]],
) -> None:
    _, peer, theirs = pair
    peer.buffer = bytearray(16)  # type: ignore[assignment]  # not a view: fine
    theirs.send(b"first")
    await peer.until(lambda: bytes(peer.data) == b"first")
    peer.buffer = memoryview(b"read-only buffer")
    theirs.send(b"second")
    assert isinstance(await peer.lost, TypeError)
    assert len(loop_errors) == 1


async def test_a_released_view_fails_as_in_python(
    pair: tuple[SocketTransport, Peer, socket.socket],
    loop_errors: list[dict[str, Any]],
) -> None:
    """Released views are refused before any system call, compiled or not: for a
    write at once, for a read as the protocol's buffer (the read fails)."""
    transport, peer, theirs = pair
    released = memoryview(bytearray(16))
    released.release()
    with pytest.raises(ValueError, match="released"):
        transport.write(released)
    peer.buffer = released
    theirs.send(b"data")
    assert isinstance(await peer.lost, ValueError)
    assert len(loop_errors) == 1


async def test_a_reset_on_read_ends_the_connection_quietly(
    pair: tuple[SocketTransport, Peer, socket.socket],
    loop_errors: list[dict[str, Any]],
) -> None:
    """The peer closes with a write of ours unread: Linux fails our read with
    ECONNRESET, the socket's error, which is routine and only logged."""
    transport, peer, theirs = pair
    transport.write(b"unread")
    theirs.close()
    assert isinstance(await peer.lost, ConnectionResetError)
    assert loop_errors == []


async def test_extra_info_and_protocol(
    pair: tuple[SocketTransport, Peer, socket.socket],
) -> None:
    transport, peer, _ = pair
    assert isinstance(transport.get_extra_info("socket"), socket.socket)
    assert transport.get_extra_info("peername", "none") == "none"
    assert transport.get_protocol() is peer
    assert "open" in repr(transport)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=1, low=2)


def adopted_here() -> bool:
    """Whether adopt() takes the running loop's plain transports: asyncio's always,
    uvloop's (C) only for our compiled transport."""
    on_uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    return COMPILED or not on_uvloop


async def test_the_server_adopts_plain_tcp(serve: ServeFactory) -> None:
    """An upgraded plain-TCP socket runs on our transport, on asyncio's loop and
    (compiled) on uvloop, and echoes through it."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    transport = connection_of(ws).transport
    assert isinstance(transport, SocketTransport) is adopted_here()
    raw.writer.write(client_frame(OP_TEXT, b"ping"))
    assert (await handler.next("message")).args == ("ping",)
    await raw.close()
    await handler.next("close")


async def test_adopt_declines_what_it_cannot_take() -> None:
    """Not a plain transport of asyncio's or uvloop's, or one with bytes buffered:
    None."""
    loop = asyncio.get_running_loop()
    peer = Peer()
    ours, theirs = socket.socketpair()
    try:
        transport, _ = await loop.connect_accepted_socket(lambda: peer, ours)
        assert adopt(object(), peer) is None  # type: ignore[arg-type]
        transport.set_write_buffer_limits(high=1 << 30)
        transport.write(b"q" * BIG)  # more than the socket takes at once
        assert transport.get_write_buffer_size()
        assert adopt(transport, peer) is None
        transport.abort()
    finally:
        theirs.close()


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def test_adopting_a_unix_socket_lets_the_loops_descriptor_go() -> None:
    """The loop's transport of a Unix socket is adopted: its descriptor is closed
    once it lets go, ours (a duplicate) carries the bytes both ways."""
    if not adopted_here():
        pytest.skip("uvloop's transport stays with pure Python")
    loop = asyncio.get_running_loop()
    peer = Peer()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(lambda: peer, ours)
    loops = transport.get_extra_info("socket").fileno()
    own = adopt(transport, peer)
    assert isinstance(own, SocketTransport)
    mine = own.get_extra_info("socket").fileno()
    assert transport.is_closing()
    let_go = Peer()  # hears the loop's transport end, in place of adopt's protocol
    transport.set_protocol(let_go)
    assert await let_go.lost is None
    assert not is_open(loops) and is_open(mine)
    theirs.send(b"hello")
    await peer.until(lambda: bytes(peer.data) == b"hello")
    own.write(b"world")
    assert await read_all(theirs, 5) == b"world"
    own.close()
    assert await peer.lost is None
    assert not is_open(mine)
    theirs.close()


async def test_echo_with_many_clients_through_our_transport(
    serve: ServeFactory,
) -> None:
    """Frames of every length form echo intact over 8 sockets read into one buffer."""
    served = await serve(Echo())
    clients = [await connect(served.port) for _ in range(8)]
    sizes = [0, 1, 125, 126, 65535, 65536, 70_000]
    frames = [client_frame(OP_TEXT, b"a" * size) for size in sizes]
    for raw in clients:
        raw.writer.write(b"".join(frames))
    for raw in clients:
        for size in sizes:
            assert await read_frame(raw.reader) == (True, OP_TEXT, b"a" * size)
    for raw in clients:
        await raw.close()


def adopt_on(loop: asyncio.AbstractEventLoop) -> tuple[Any, Peer, socket.socket]:
    """On ``loop``: asyncio's transport for one end of a socket pair, given to a
    Peer, then adopted; returns what adopt returned, the Peer and the other end."""
    ours, theirs = socket.socketpair()

    async def make() -> tuple[Any, Peer]:
        peer = Peer()
        transport, _ = await loop.connect_accepted_socket(lambda: peer, ours)
        return adopt(transport, peer), peer

    own, peer = loop.run_until_complete(make())
    return own, peer, theirs


def test_a_loop_left_with_open_sockets_is_collected_with_them() -> None:
    """The per-loop poller holds no loop alive: a loop closed without closing its
    adopted sockets is collected, and the sockets are closed with it."""
    loop = asyncio.SelectorEventLoop()
    own, peer, theirs = adopt_on(loop)
    assert isinstance(own, SocketTransport)
    loop.run_until_complete(asyncio.sleep(0))  # asyncio's transport lets go
    loop.close()
    gone = weakref.ref(loop)
    del loop, own, peer
    with warnings.catch_warnings():  # the socket's "unclosed" warning: the point
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert gone() is None
    theirs.settimeout(10)
    assert theirs.recv(1) == b""  # closed by the collector: EOF
    theirs.close()


def test_adopt_keeps_asyncio_transport_when_it_cannot_make_its_own() -> None:
    """With one file descriptor left, dup() gets it and epoll() fails: asyncio's
    transport stays, open and working, and nothing leaks."""
    loop = asyncio.SelectorEventLoop()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        probe = os.open(os.devnull, os.O_RDONLY)
        os.close(probe)  # the lowest free descriptor; two are made below first
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe + 3, hard))
        own, peer, theirs = adopt_on(loop)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert own is None
        theirs.send(b"still asyncio's")
        loop.run_until_complete(peer.until(lambda: peer.data == b"still asyncio's"))
    finally:
        theirs.close()
        loop.run_until_complete(peer.lost)
        loop.close()
