"""The close timeout's timer lives no longer than its connection.

Closing on our side arms a timer (``close_timeout``) that aborts a client that
never finishes the handshake. Once the connection is gone, the timer must go
with it: a pending ``call_later`` handle would keep every closed connection (its
parser, outbox and the socket's ``data``) alive for the whole timeout.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from aiohttp_upgrade import ServerWebSocket, WebSocketHandler

from .conftest import ServeFactory, connection_of
from .wire import OP_CLOSE, close_payload, connect, parse_close


class LostSpy(asyncio.BufferedProtocol):
    """Put in front of a socket's protocol: passes every call on, lets go of the
    protocol at ``connection_lost`` and then sets ``lost``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lost = asyncio.Event()

    def get_buffer(self, sizehint: int) -> Any:
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.inner.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)
        self.lost.set()


class ClosesOnOpen(WebSocketHandler[Any]):
    """Closes each socket with 1000 as it opens, keeping only a weak reference to
    it (the connection has no weak references; it holds the socket)."""

    def __init__(self) -> None:
        # Far beyond the test's own timeout: only freeing at once can pass.
        super().__init__(close_timeout=600.0)
        self.socket: weakref.ref[ServerWebSocket[Any]] | None = None
        self.opened = asyncio.Event()
        self.spy: LostSpy | None = None

    def open(self, ws: ServerWebSocket[Any]) -> None:
        self.socket = weakref.ref(ws)
        transport = connection_of(ws).transport
        self.spy = LostSpy(transport.get_protocol())
        transport.set_protocol(self.spy)
        self.opened.set()
        ws.close(1000, "bye")


async def test_a_cleanly_closed_connection_is_freed_at_once(
    serve: ServeFactory,
) -> None:
    """After ws.close() and the client's Close and FIN, the connection and its socket can be collected as soon as connection_lost ran, not close_timeout later."""
    handler = ClosesOnOpen()
    served = await serve(handler)
    raw = await connect(served.port)
    async with asyncio.timeout(10):
        await handler.opened.wait()
        _, opcode, payload = await raw.recv()
        assert (opcode, parse_close(payload)[0]) == (OP_CLOSE, 1000)
        await raw.send(OP_CLOSE, close_payload(1000))
        await raw.close()
        assert handler.spy is not None
        await handler.spy.lost.wait()
    gc.collect()
    assert handler.socket is not None
    assert handler.socket() is None
