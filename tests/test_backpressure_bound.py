"""The hard bound on what one event-loop turn may leave buffered for a socket.

``backpressure_limit`` is compared with the client's backlog at a turn's first
send, so a burst within one turn is not cut; :func:`~aiohttp_upgrade._sendlimits.hard_limit`
(``max(4 x limit, 64 MiB)``) bounds that burst. The attack it stops: a client that
never reads sends one segment of many tiny frames, each answered with a large
send from a plain hook, all within one read of the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiohttp_upgrade import ReadyState, ServerWebSocket, WebSocketHandler
from aiohttp_upgrade._sendlimits import hard_limit

from .conftest import Event, ServeFactory
from .wire import OP_TEXT, client_frame, connect

LIMIT = 256 * 1024
REPLY = bytes(1024 * 1024)
REQUESTS = 200  # 200 MiB of replies asked for in one segment: 3 x the hard limit
FRAME = len(REPLY) + 10  # one reply on the wire


class Amplifier(WebSocketHandler[Any]):
    """Answers every message with 1 MiB from a plain hook; records the largest
    buffered amount seen after a send, the codes and what was dropped."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.codes: list[int] = []
        self.dropped_sizes: list[int] = []
        self.peak = 0

    async def next(self, hook: str) -> Event:
        """The next recorded event of ``hook``, skipping others."""
        async with asyncio.timeout(10):
            while True:
                event = await self.events.get()
                if event.hook == hook:
                    return event

    def open(self, ws: ServerWebSocket[Any]) -> None:
        self.events.put_nowait(Event("open", ws, ()))

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.codes.append(ws.send(REPLY))
        self.peak = max(self.peak, ws.get_buffered_amount())
        if len(self.codes) == REQUESTS:
            self.events.put_nowait(Event("done", ws, ()))

    def dropped(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.dropped_sizes.append(len(message))

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.events.put_nowait(Event("close", ws, (code, reason)))


@pytest.mark.parametrize("close_on_limit", [False, True], ids=["drop", "close"])
async def test_one_segment_of_requests_cannot_buffer_past_the_hard_limit(
    serve: ServeFactory, close_on_limit: bool
) -> None:
    """200 tiny frames in one segment, each answered with 1 MiB to a client that never reads, leave at most the hard limit (64 MiB) and one reply buffered; the rest is dropped, or the socket closed (1006)."""
    handler = Amplifier(
        backpressure_limit=LIMIT, close_on_backpressure_limit=close_on_limit
    )
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    raw.writer.write(b"".join(client_frame(OP_TEXT, b"?") for _ in range(REQUESTS)))
    await raw.writer.drain()
    if close_on_limit:
        assert (await handler.next("close")).args[0] == 1006
        assert ws.ready_state is ReadyState.CLOSED
    else:
        await handler.next("done")
        assert handler.dropped_sizes == [len(REPLY)] * handler.codes.count(0)
        assert ws.ready_state is ReadyState.OPEN
        assert ws.get_buffered_amount() <= hard_limit(LIMIT) + FRAME
    assert 0 in handler.codes
    assert handler.peak <= hard_limit(LIMIT) + FRAME
    raw.writer.transport.abort()
    await raw.close()
