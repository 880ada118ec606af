"""``ready_state`` is CLOSING (2) while the closing handshake runs, as Bun's
``readyState``, and CLOSED once it ends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp_upgrade import ReadyState, ServerWebSocket

from .conftest import ConnectRaw, Recorder, ServeFactory
from .redis_support import wait_until
from .wire import OP_CLOSE, close_payload


class NotingRecorder(Recorder):
    """A Recorder that notes ``ready_state`` and a send's code inside ``close``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.inside_close: list[tuple[ReadyState, int]] = []

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.inside_close.append((ws.ready_state, ws.send("too late")))
        super().close(ws, code, reason)


async def test_ready_state_is_closing_while_the_handshake_runs(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """After ws.close() the socket reports CLOSING (2) until the client answers."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    assert ws.ready_state is ReadyState.CLOSING
    assert int(ws.ready_state) == 2
    assert (await raw.recv())[1] == OP_CLOSE


async def test_sends_while_closing_return_0(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """While CLOSING a send, ping and publish return 0, Bun's code for a closed socket."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    assert ws.ready_state is ReadyState.CLOSING
    assert (ws.send("late"), ws.ping(), ws.publish("room", "late")) == (0, 0, 0)
    assert ws.subscribe("room") is False
    assert (await raw.recv())[1] == OP_CLOSE


async def test_close_hook_of_a_server_close_sees_closing(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """The close hook of ws.close() runs while the handshake still runs: CLOSING, send 0."""
    handler = NotingRecorder()
    served = await serve(handler)
    await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    await handler.next("close")
    assert handler.inside_close == [(ReadyState.CLOSING, 0)]


async def test_ready_state_is_closed_once_the_client_answers(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """The client's Close and FIN end the handshake: CLOSING becomes CLOSED."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    assert (await raw.recv())[1] == OP_CLOSE
    await raw.send(OP_CLOSE, close_payload(4000))
    await raw.close()
    await wait_until(lambda: ws.ready_state is ReadyState.CLOSED, what="CLOSED")
    assert ws.get_buffered_amount() == 0


async def test_a_client_close_goes_straight_to_closed(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A client's Close is answered at once: the close hook sees CLOSED (no CLOSING)."""
    handler = NotingRecorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await handler.next("open")
    await raw.send(OP_CLOSE, close_payload(1000))
    await handler.next("close")
    assert handler.inside_close == [(ReadyState.CLOSED, 0)]


async def test_terminate_while_closing_cuts_the_connection(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """terminate() after close() aborts at once, as Bun's does, without waiting for
    the close timeout; the close hook has run once, and the socket is CLOSED."""
    handler = Recorder(close_timeout=60)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    assert (await raw.recv())[1] == OP_CLOSE
    ws.terminate()
    assert ws.ready_state is ReadyState.CLOSED
    async with asyncio.timeout(10):  # the abort, not the 60 s close timeout
        with contextlib.suppress(ConnectionResetError):  # a reset or an EOF
            assert await raw.reader.read() == b""
    assert (await handler.next("close")).args == (4000, "bye")
    assert handler.events.empty()
