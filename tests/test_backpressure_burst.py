"""What ``backpressure_limit`` measures: bytes the client had the chance to take and
has not, not the bytes of one burst sent in a single event-loop turn.

A hook publishes 512 x 64 KiB (32 MiB) in one call against a 256 KiB limit. A
client that reads gets every message and stays connected; a client that does not
read is cut (or misses messages) from the next turn on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import aiohttp
import pytest

from aiohttp_upgrade import ReadyState, ServerWebSocket, WebSocketHandler

from .conftest import Event, ServeFactory
from .flow_support import numbered, sequence_number
from .wire import connect

LIMIT = 256 * 1024
BURST = 512
CHUNK = 64 * 1024
TOPIC = "burst"


class Burst(WebSocketHandler[Any]):
    """Subscribes each socket; on "go" publishes BURST numbered chunks in one call
    and keeps the codes. Records open, message, dropped and close."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.codes: list[int] = []

    async def next(self, hook: str) -> Event:
        """The next recorded event of ``hook``, skipping others."""
        async with asyncio.timeout(10):
            while True:
                event = await self.events.get()
                if event.hook == hook:
                    return event

    def burst(self) -> None:
        publish = self.server.publish
        self.codes = [publish(TOPIC, numbered(seq, CHUNK)) for seq in range(BURST)]

    def open(self, ws: ServerWebSocket[Any]) -> None:
        ws.subscribe(TOPIC)
        self.events.put_nowait(Event("open", ws, ()))

    # Typed as the base class's hook, so that a subclass may make it async.
    def message(
        self, ws: ServerWebSocket[Any], message: str | bytes
    ) -> Awaitable[None] | None:
        self.events.put_nowait(Event("message", ws, (message,)))
        if message == "go":
            self.burst()
        return None

    def dropped(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.events.put_nowait(Event("dropped", ws, (message,)))

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.events.put_nowait(Event("close", ws, (code, reason)))


class AsyncBurst(Burst):
    """The same burst from an async message hook (its socket's sends are written at once)."""

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        Burst.message(self, ws, message)


@pytest.mark.parametrize("handler_class", [Burst, AsyncBurst], ids=["sync", "async"])
async def test_reading_client_gets_a_burst_larger_than_the_limit(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    handler_class: type[Burst],
) -> None:
    """A client that reads gets all 512 x 64 KiB published in one hook under a 256 KiB limit, and is not cut."""
    handler = handler_class(backpressure_limit=LIMIT, close_on_backpressure_limit=True)
    served = await serve(handler)
    async with client_session.ws_connect(served.url, max_msg_size=0) as client:
        ws = (await handler.next("open")).ws
        await client.send_str("go")
        received = [sequence_number(await client.receive_bytes()) for _ in range(BURST)]
        assert received == list(range(BURST))
        assert 0 not in handler.codes
        assert ws.ready_state is ReadyState.OPEN
        await client.send_str("still here")
        while (await handler.next("message")).args != ("still here",):
            pass
    assert (await handler.next("close")).args[0] == 1000


async def test_client_that_does_not_read_is_cut_after_the_burst(
    serve: ServeFactory,
) -> None:
    """A client that reads nothing takes the whole burst into its buffer, and the next turn's publish cuts it (1006)."""
    handler = Burst(backpressure_limit=LIMIT, close_on_backpressure_limit=True)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    handler.burst()
    assert 0 not in handler.codes
    assert ws.get_buffered_amount() > LIMIT
    await asyncio.sleep(0)  # not synchronisation: the next loop turn
    assert served.server.publish(TOPIC, "next turn") == 0
    assert ws.ready_state is ReadyState.CLOSED
    assert (await handler.next("close")).args[0] == 1006
    await raw.close()


async def test_client_that_does_not_read_misses_later_messages(
    serve: ServeFactory,
) -> None:
    """Without close_on_backpressure_limit, the next turn's publish to a client that read nothing is dropped and reported."""
    handler = Burst(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    handler.burst()
    await asyncio.sleep(0)  # not synchronisation: the next loop turn
    assert served.server.publish(TOPIC, "next turn") == 0
    event = await handler.next("dropped")
    assert (event.ws, event.args) == (ws, ("next turn",))
    assert ws.ready_state is ReadyState.OPEN
    await raw.close()


class TwoBursts(Burst):
    """On "go" publishes a burst, and a second one (numbered on) in the next loop
    turn; records the second burst's codes with a "second" event."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.second_codes: list[int] = []

    def burst(self) -> None:
        super().burst()
        asyncio.get_running_loop().call_soon(self.second_burst)

    def second_burst(self) -> None:
        publish = self.server.publish
        seqs = range(BURST, 2 * BURST)
        self.second_codes = [publish(TOPIC, numbered(seq, CHUNK)) for seq in seqs]
        self.events.put_nowait(Event("second", None, ()))  # type: ignore[arg-type]

    async def until_second(self) -> list[Event]:
        """The events recorded before the second burst ended, in order."""
        events: list[Event] = []
        async with asyncio.timeout(10):
            while not events or events[-1].hook != "second":
                events.append(await self.events.get())
        return events[:-1]


async def test_a_second_burst_in_the_next_turn_is_dropped_for_a_reader(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A burst published in the turn right after another is dropped whole even for a client that reads (it cannot have taken 32 MiB in one turn); the client gets the first burst and stays open."""
    handler = TwoBursts(backpressure_limit=LIMIT)
    served = await serve(handler)
    async with client_session.ws_connect(served.url, max_msg_size=0) as client:
        ws = (await handler.next("open")).ws
        await client.send_str("go")
        events = await handler.until_second()
        assert handler.second_codes == [0] * BURST
        dropped = [event.args[0] for event in events if event.hook == "dropped"]
        assert [sequence_number(m) for m in dropped] == list(range(BURST, 2 * BURST))
        received = [sequence_number(await client.receive_bytes()) for _ in range(BURST)]
        assert received == list(range(BURST))
        assert ws.ready_state is ReadyState.OPEN
        assert served.server.publish(TOPIC, "after") > 0
        assert await client.receive_str() == "after"


async def test_a_second_burst_in_the_next_turn_cuts_a_reader_with_close_on_limit(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """With close_on_backpressure_limit, a burst published in the turn right after another aborts even a client that reads (1006)."""
    handler = TwoBursts(backpressure_limit=LIMIT, close_on_backpressure_limit=True)
    served = await serve(handler)
    async with client_session.ws_connect(served.url, max_msg_size=0) as client:
        ws = (await handler.next("open")).ws
        await client.send_str("go")
        events = await handler.until_second()
        assert handler.second_codes[0] == 0
        assert ws.ready_state is ReadyState.CLOSED
        closes = [event.args[0] for event in events if event.hook == "close"]
        assert closes == [1006]
