"""Idle timeout, server pings and the ping/pong hooks, with short timeouts.

The server sweeps its sockets every ``idle_timeout / 8``: with ``send_pings`` an
idle socket is pinged at 6/8 and aborted (close hook 1006) at 8/8 of the timeout
without a received frame. These tests wait for events (hooks, frames, EOF), never
for a fixed time; "stays open for a while" is measured in server pings answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from aiohttp_upgrade import ReadyState, Server, ServerWebSocket

from .conftest import Recorder, ServeFactory
from .flow_support import CLIENT_KINDS, open_client, read_raw_frame
from .wire import OP_PING, OP_PONG, OP_TEXT, connect

TIMEOUT = 0.4
# The sweep ticks every TIMEOUT/8 from a phase of its own: a socket idle since t
# is closed in [t + 7/8 TIMEOUT, t + TIMEOUT] and pinged in [t + 5/8, t + 6/8].
EARLIEST_CLOSE = TIMEOUT * 7 / 8
EARLIEST_PING = TIMEOUT * 5 / 8


async def test_silent_client_is_pinged_then_closed_with_1006(
    serve: ServeFactory,
) -> None:
    """A raw client that never answers the server's ping is aborted and the close hook sees 1006."""
    handler = Recorder(idle_timeout=TIMEOUT, send_pings=True)
    served = await serve(handler)
    loop = asyncio.get_running_loop()
    raw = await connect(served.port)
    opened = loop.time()
    await handler.next("open")
    frame = await read_raw_frame(raw.reader)
    pinged = loop.time() - opened
    assert frame.opcode == OP_PING
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await read_raw_frame(raw.reader)  # no Close frame: the connection is aborted
    code, _ = (await handler.next("close")).args
    closed = loop.time() - opened
    assert code == 1006
    assert EARLIEST_PING <= pinged < closed
    assert closed >= EARLIEST_CLOSE
    await raw.close()


@pytest.mark.parametrize("kind", CLIENT_KINDS, ids=CLIENT_KINDS)
async def test_client_answering_pings_stays_open_across_timeouts(
    serve: ServeFactory, kind: str
) -> None:
    """A client that answers pings stays open for four rounds of pings (over two timeouts)."""
    handler = Recorder(idle_timeout=TIMEOUT, send_pings=True)
    served = await serve(handler)
    loop = asyncio.get_running_loop()
    async with open_client(kind, served.url, served.port) as client:
        # The client answers pings only while it reads: keep it reading.
        reading = asyncio.ensure_future(client.receive_text())
        ws = (await handler.next("open")).ws
        opened = loop.time()
        for _ in range(4):
            await handler.next("pong")
        assert loop.time() - opened > 2 * TIMEOUT
        assert ws.ready_state is ReadyState.OPEN
        ws.send("still here")
        assert await reading == "still here"


async def test_without_pings_idle_socket_closes_after_timeout(
    serve: ServeFactory,
) -> None:
    """Without send_pings an idle client is never pinged and is closed with 1006 after idle_timeout."""
    handler = Recorder(idle_timeout=TIMEOUT, send_pings=False)
    served = await serve(handler)
    loop = asyncio.get_running_loop()
    raw = await connect(served.port)
    opened = loop.time()
    await handler.next("open")
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await read_raw_frame(raw.reader)  # EOF, not a ping
    assert (await handler.next("close")).args[0] == 1006
    assert loop.time() - opened >= EARLIEST_CLOSE
    await raw.close()


async def test_received_frames_reset_the_timer(serve: ServeFactory) -> None:
    """Without pings, a client that keeps sending stays open for three timeouts."""
    handler = Recorder(idle_timeout=TIMEOUT, send_pings=False)
    served = await serve(handler)
    loop = asyncio.get_running_loop()
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    end = loop.time() + 3 * TIMEOUT
    while loop.time() < end:
        await raw.send(OP_TEXT, b"tick")
        await handler.next("message")
    assert ws.ready_state is ReadyState.OPEN
    await raw.close()


async def test_sends_reset_the_timer(serve: ServeFactory) -> None:
    """Without pings, a client that only receives stays open for three timeouts, then closes once sends stop."""
    handler = Recorder(idle_timeout=TIMEOUT, send_pings=False)
    served = await serve(handler)
    loop = asyncio.get_running_loop()
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    end = loop.time() + 3 * TIMEOUT
    while loop.time() < end:
        assert ws.send("tick") == 4
        assert (await read_raw_frame(raw.reader)).payload == b"tick"
    assert ws.ready_state is ReadyState.OPEN
    assert (await handler.next("close")).args[0] == 1006
    await raw.close()


async def test_zero_idle_timeout_never_closes(serve: ServeFactory) -> None:
    """With idle_timeout=0 a silent client outlives two timeouts of a server that has one."""
    handler = Recorder(idle_timeout=0)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    witness_handler = Recorder(idle_timeout=TIMEOUT, send_pings=False)
    witness = await serve(witness_handler)
    for _ in range(2):
        other = await connect(witness.port)
        await witness_handler.next("close")
        await other.close()
    assert ws.ready_state is ReadyState.OPEN
    assert ws.ping(b"alive") == 5
    assert (await read_raw_frame(raw.reader)).payload == b"alive"
    await raw.close()


# -- ping and pong hooks -------------------------------------------------------------


class PingReporter(Recorder):
    """Sends a text message from the ping hook, to show what went out first."""

    def ping(self, ws: ServerWebSocket[Any], data: bytes) -> None:
        super().ping(ws, data)
        ws.send("hook ran")


class AsyncPingReporter(Recorder):
    """The same with a coroutine hook, dispatched through the socket's owner task."""

    # Recorder's hooks are plain functions; the base class allows either kind.
    async def ping(self, ws: ServerWebSocket[Any], data: bytes) -> None:  # type: ignore[override]
        super().ping(ws, data)
        ws.send("hook ran")


@pytest.mark.parametrize(
    "handler_class", [PingReporter, AsyncPingReporter], ids=["sync", "async"]
)
async def test_ping_is_answered_before_ping_hook_runs(
    serve: ServeFactory, handler_class: type[Recorder]
) -> None:
    """An incoming ping's pong goes out before anything the ping hook sends, and the hook sees the payload."""
    handler = handler_class()
    served = await serve(handler)
    raw = await connect(served.port)
    await handler.next("open")
    await raw.send(OP_PING, b"are you there")
    first = await read_raw_frame(raw.reader)
    second = await read_raw_frame(raw.reader)
    assert (first.opcode, first.payload) == (OP_PONG, b"are you there")
    assert (second.opcode, second.payload) == (OP_TEXT, b"hook ran")
    assert (await handler.next("ping")).args == (b"are you there",)
    await raw.close()


async def test_pong_hook_sees_payload(serve: ServeFactory) -> None:
    """The pong hook receives the payload of the client's answer to ws.ping()."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    assert ws.ping(b"\x00\x01 nonce") == 8
    frame = await read_raw_frame(raw.reader)
    assert (frame.opcode, frame.payload) == (OP_PING, b"\x00\x01 nonce")
    await raw.send(OP_PONG, frame.payload)
    assert (await handler.next("pong")).args == (b"\x00\x01 nonce",)
    await raw.close()


async def test_unsolicited_pong_reaches_pong_hook(serve: ServeFactory) -> None:
    """A pong nobody asked for is passed to the pong hook and not answered."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await raw.send(OP_PONG, b"heartbeat")
    assert (await handler.next("pong")).args == (b"heartbeat",)
    ws.send("next")
    frame = await read_raw_frame(raw.reader)
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"next")
    await raw.close()


# -- reset_idle_timeout_on_send --------------------------------------------------------


@contextlib.asynccontextmanager
async def busy_room(server: Server[Any], topic: str) -> AsyncIterator[None]:
    """Publish to ``topic`` sixteen times per idle timeout until the block ends.

    The sleep paces the load; it synchronises nothing.
    """

    async def publish() -> None:
        while True:
            server.publish(topic, "tick")
            await asyncio.sleep(TIMEOUT / 16)

    task = asyncio.ensure_future(publish())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_silent_client_in_busy_room_is_closed_when_sends_do_not_count(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """With reset_idle_timeout_on_send=False a silent client in a busy room is pinged and closed (1006) while one that answers pings stays open."""
    handler = Recorder(idle_timeout=TIMEOUT, reset_idle_timeout_on_send=False)
    served = await serve(handler)
    raw = await connect(served.port)
    silent = (await handler.next("open")).ws
    async with client_session.ws_connect(served.url, autoping=True) as alive_client:
        alive = (await handler.next("open")).ws
        ticks: list[str] = []

        async def read_alive() -> None:
            # The aiohttp client answers pings while it reads.
            async for message in alive_client:
                ticks.append(message.data)

        reading = asyncio.ensure_future(read_alive())
        silent.subscribe("room")
        alive.subscribe("room")
        seen: list[int] = []

        async def read_silent() -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    seen.append((await read_raw_frame(raw.reader)).opcode)

        silent_reader = asyncio.ensure_future(read_silent())
        async with busy_room(served.server, "room"):
            event = await handler.next("close")
            assert (event.ws, event.args[0]) == (silent, 1006)
            for _ in range(2):  # two more rounds of pings after the silent one left
                assert (await handler.next("pong")).ws is alive
            assert alive.ready_state is ReadyState.OPEN
        await silent_reader
        assert OP_PING in seen and OP_TEXT in seen
        assert "tick" in ticks
        await alive_client.close()
        await reading
    await raw.close()


async def test_silent_client_in_busy_room_stays_open_by_default(
    serve: ServeFactory,
) -> None:
    """By default (Bun's behaviour) every send resets the timer: a silent subscriber of a busy room is never pinged nor closed."""
    handler = Recorder(idle_timeout=TIMEOUT)
    assert handler.reset_idle_timeout_on_send is True
    served = await serve(handler)
    loop = asyncio.get_running_loop()
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    ws.subscribe("room")
    end = loop.time() + 3 * TIMEOUT
    async with busy_room(served.server, "room"):
        while loop.time() < end:
            frame = await read_raw_frame(raw.reader)
            assert (frame.opcode, frame.payload) == (OP_TEXT, b"tick")
    assert ws.ready_state is ReadyState.OPEN
    await raw.close()
