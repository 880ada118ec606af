"""Backpressure, ``drain`` and message limits against real clients that stop reading.

A client "stops reading" by not asking for messages: the raw socket's stream
reader, aiohttp's client and the ``websockets`` client all pause their transport
once their own small buffers fill, so the kernel buffers fill and then the
server socket's write buffer grows.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from aiohttp_upgrade import ReadyState, ServerWebSocket

from .conftest import Event, Recorder, ServeFactory
from .flow_support import (
    CHUNK,
    CLIENT_KINDS,
    fill,
    numbered,
    open_client,
    read_raw_frame,
    sequence_number,
)
from .wire import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    Raw,
    client_frame,
    connect,
    parse_close,
)

LIMIT = 1024 * 1024
FRAME = CHUNK + 10  # one flood message on the wire: payload and 10-byte header


class EchoRecorder(Recorder):
    """Records every hook and echoes messages back."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        super().message(ws, message)
        ws.send(message)


class DrainRecorder(Recorder):
    """Records ``drain`` with the buffered amount it saw."""

    def drain(self, ws: ServerWebSocket[Any]) -> None:
        self.events.put_nowait(Event("drain", ws, (ws.get_buffered_amount(),)))


def collapse(codes: list[int]) -> list[int]:
    """Drop consecutive repeats: [5, 5, -1, -1, 0] -> [5, -1, 0]."""
    return [c for i, c in enumerate(codes) if i == 0 or codes[i - 1] != c]


# -- send codes and the buffer bound -------------------------------------------------


async def test_send_goes_from_length_to_minus_one_to_zero(serve: ServeFactory) -> None:
    """Against a client that never reads, send returns the length, then -1, then 0."""
    handler = Recorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    sent = await fill(ws, until=-1)
    sent += await fill(ws, until=0, start=len(sent))
    assert collapse([code for _, code in sent]) == [CHUNK, -1, 0]
    await raw.close()


async def test_buffered_amount_stays_within_limit_plus_one_message(
    serve: ServeFactory,
) -> None:
    """Flooding a client that never reads keeps get_buffered_amount <= limit + one frame."""
    handler = Recorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await fill(ws, until=0)
    peak = 0
    for seq in range(8 * LIMIT // CHUNK):  # eight times the limit on top
        ws.send(numbered(seq))
        peak = max(peak, ws.get_buffered_amount())
        await asyncio.sleep(0)  # let the per-turn flush write
    assert LIMIT < peak <= LIMIT + FRAME
    assert ws.ready_state is ReadyState.OPEN
    await raw.close()


async def test_dropped_message_leaves_socket_open(serve: ServeFactory) -> None:
    """Without close_on_backpressure_limit a dropped send returns 0 and the socket stays open."""
    handler = Recorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await fill(ws, until=0)
    assert ws.ready_state is ReadyState.OPEN
    assert ws.send(b"more") == 0
    assert handler.events.empty()
    await raw.close()


async def test_close_on_backpressure_limit_aborts_and_runs_close_hook(
    serve: ServeFactory,
) -> None:
    """With close_on_backpressure_limit the dropping send aborts and the close hook sees 1006."""
    handler = Recorder(backpressure_limit=LIMIT, close_on_backpressure_limit=True)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await fill(ws, until=0)
    assert ws.ready_state is ReadyState.CLOSED
    assert ws.get_buffered_amount() == 0
    event = await handler.next("close")
    assert event.args[0] == 1006
    assert ws.send(b"more") == 0
    await raw.close()


async def test_stuck_socket_does_not_hold_up_others(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """While one client's buffer is over the limit, another client is served at once."""
    handler = EchoRecorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    stuck = (await handler.next("open")).ws
    await fill(stuck, until=0)
    async with client_session.ws_connect(served.url) as other:
        for i in range(20):
            await other.send_str(f"hello {i}")
            assert await other.receive_str() == f"hello {i}"
    assert stuck.get_buffered_amount() > LIMIT
    assert stuck.ready_state is ReadyState.OPEN
    await raw.close()


async def test_publish_to_stuck_subscriber_still_reaches_others(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A publish drops the message for a subscriber over its limit (returns 0) and delivers to the rest."""
    handler = Recorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    stuck = (await handler.next("open")).ws
    async with client_session.ws_connect(served.url) as other:
        reader = (await handler.next("open")).ws
        stuck.subscribe("news")
        reader.subscribe("news")
        await fill(stuck, until=0)
        assert served.server.publish("news", "headline") == 0
        assert await other.receive_str() == "headline"
    await raw.close()


# -- drain ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENT_KINDS, ids=CLIENT_KINDS)
async def test_drain_fires_once_when_reader_resumes_and_all_arrive_in_order(
    serve: ServeFactory, kind: str
) -> None:
    """After a -1, resuming the reader delivers every accepted message in order and one drain with an empty buffer."""
    handler = DrainRecorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    async with open_client(kind, served.url, served.port) as client:
        ws = (await handler.next("open")).ws
        sent = await fill(ws, until=-1)
        sent += await fill(ws, until=0, start=len(sent))
        accepted = [seq for seq, code in sent if code != 0]
        assert handler.events.empty()  # no drain while the client is not reading
        received = [sequence_number(await client.receive()) for _ in accepted]
        assert received == accepted
        drain = await handler.next("drain")
        assert drain.args == (0,)
        # A round trip: any further drain would be recorded before this message.
        await client.send_text("done")
        later: list[Event] = []
        while not later or later[-1].hook != "message":
            later.append(await handler.events.get())
        assert [event.hook for event in later] == ["message"]


async def test_drain_hook_can_pump_a_large_stream(serve: ServeFactory) -> None:
    """A producer that sends from drain until -1 delivers everything, in order, with no drop."""
    total = 16 * LIMIT // CHUNK
    codes: list[int] = []

    class Pump(Recorder):
        next_seq = 0

        def open(self, ws: ServerWebSocket[Any]) -> None:
            self.drain(ws)

        def drain(self, ws: ServerWebSocket[Any]) -> None:
            while self.next_seq < total:
                code = ws.send(numbered(self.next_seq))
                codes.append(code)
                self.next_seq += 1
                if code == -1:
                    return

    served = await serve(Pump(backpressure_limit=LIMIT))
    raw = await connect(served.port)
    received = [sequence_number((await read_raw_frame(raw.reader)).payload)]
    while received[-1] != total - 1:
        received.append(sequence_number((await read_raw_frame(raw.reader)).payload))
    assert received == list(range(total))
    assert 0 not in codes
    assert -1 in codes
    await raw.close()


async def test_buffered_amount_is_zero_on_an_idle_socket(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """get_buffered_amount is 0 once a small message has gone out to a reading client."""
    handler = EchoRecorder()
    served = await serve(handler)
    async with client_session.ws_connect(served.url) as client:
        ws = (await handler.next("open")).ws
        await client.send_str("hi")
        assert await client.receive_str() == "hi"
        assert ws.get_buffered_amount() == 0


# -- limits and protocol errors -----------------------------------------------------


async def _close_frame(raw: Raw) -> tuple[int | None, str]:
    """Read frames until the server's Close; return its code and reason."""
    while True:
        frame = await read_raw_frame(raw.reader)
        if frame.opcode == OP_CLOSE:
            code, reason = parse_close(frame.payload)
            return code, reason.decode()


@pytest.mark.parametrize(
    "frames",
    [
        [(OP_TEXT, True, b"x" * 1025)],
        [(OP_TEXT, False, b"x" * 600), (OP_CONTINUATION, True, b"x" * 600)],
    ],
    ids=["one-frame", "reassembled"],
)
async def test_message_over_max_payload_length_closes_1009(
    serve: ServeFactory, frames: list[tuple[int, bool, bytes]]
) -> None:
    """A message longer than max_payload_length closes with 1009, the same code the close hook sees."""
    handler = Recorder(max_payload_length=1024)
    served = await serve(handler)
    raw = await connect(served.port)
    for opcode, fin, payload in frames:
        await raw.send(opcode, payload, fin=fin)
    code, reason = await _close_frame(raw)
    assert code == 1009
    assert (await handler.next("close")).args == (code, reason)
    await raw.close()


async def test_message_of_exactly_max_payload_length_is_delivered(
    serve: ServeFactory,
) -> None:
    """A fragmented message whose total is exactly max_payload_length is delivered."""
    handler = Recorder(max_payload_length=1024)
    served = await serve(handler)
    raw = await connect(served.port)
    await raw.send(OP_TEXT, b"x" * 512, fin=False)
    await raw.send(OP_CONTINUATION, b"y" * 512)
    assert (await handler.next("message")).args == ("x" * 512 + "y" * 512,)
    await raw.close()


@pytest.mark.parametrize(
    "frames",
    [
        [(OP_TEXT, True, b"\xff")],
        [(OP_TEXT, True, b"ok \xed\xa0\x80")],  # an encoded surrogate
        [(OP_TEXT, False, b"ok"), (OP_CONTINUATION, True, b"\xc3\x28")],
        [(OP_TEXT, False, b"caf\xc3"), (OP_CONTINUATION, True, b"")],  # cut short
    ],
    ids=["one-byte", "surrogate", "fragment", "truncated"],
)
async def test_invalid_utf8_closes_1007(
    serve: ServeFactory, frames: list[tuple[int, bool, bytes]]
) -> None:
    """Invalid UTF-8 in a text message closes with 1007, the same code and reason the close hook sees."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    for opcode, fin, payload in frames:
        await raw.send(opcode, payload, fin=fin)
    code, reason = await _close_frame(raw)
    assert code == 1007
    assert (await handler.next("close")).args == (code, reason)
    await raw.close()


BAD_FRAMES = [
    pytest.param(client_frame(OP_TEXT, b"hi", mask=False), id="unmasked"),
    pytest.param(client_frame(OP_TEXT, b"hi", rsv=2), id="rsv2"),
    pytest.param(client_frame(0x3, b"hi"), id="reserved-opcode"),
    pytest.param(client_frame(OP_PING, b"hi", fin=False), id="fragmented-ping"),
    pytest.param(client_frame(OP_CONTINUATION, b"hi"), id="orphan-continuation"),
    pytest.param(client_frame(OP_CLOSE, (1005).to_bytes(2, "big")), id="close-1005"),
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
async def test_protocol_violation_closes_1002(
    serve: ServeFactory, frame: bytes
) -> None:
    """A protocol violation closes with 1002, the same code and reason the close hook sees."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    raw.writer.write(frame)
    code, reason = await _close_frame(raw)
    assert code == 1002
    assert reason
    assert (await handler.next("close")).args == (code, reason)
    await raw.close()


# -- the dropped hook -------------------------------------------------------------------


class DroppedRecorder(Recorder):
    """Records ``dropped`` with the message and whether the socket was still open."""

    def dropped(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.events.put_nowait(Event("dropped", ws, (message, ws.ready_state)))


class AsyncDroppedRecorder(Recorder):
    """An async ``dropped`` hook that sends a resync marker (dropped in turn, unreported)."""

    async def dropped(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        await asyncio.sleep(0)
        ws.send("resync")
        self.events.put_nowait(Event("dropped", ws, (message, ws.ready_state)))


@pytest.mark.parametrize(
    "handler_class", [DroppedRecorder, AsyncDroppedRecorder], ids=["sync", "async"]
)
async def test_dropped_hook_gets_each_message_a_send_dropped(
    serve: ServeFactory, handler_class: type[Recorder]
) -> None:
    """Each send that returns 0 at the limit calls dropped(ws, message) once, in order."""
    handler = handler_class(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    sent = await fill(ws, until=0)
    extra = [f"late {i}" for i in range(3)]
    assert [ws.send(message) for message in extra] == [0, 0, 0]
    dropped = [(await handler.next("dropped")).args for _ in range(4)]
    assert dropped == [(numbered(sent[-1][0]), ReadyState.OPEN)] + [
        (message, ReadyState.OPEN) for message in extra
    ]
    await raw.close()


async def test_dropped_hook_gets_a_publish_dropped_for_that_socket(
    serve: ServeFactory,
) -> None:
    """A publish dropped for one stuck subscriber calls dropped for it, not for others."""
    handler = DroppedRecorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    stuck_raw = await connect(served.port)
    stuck = (await handler.next("open")).ws
    reader_raw = await connect(served.port)
    reader = (await handler.next("open")).ws
    for ws in (stuck, reader):
        ws.subscribe("room")
    await fill(stuck, until=0)
    await handler.next("dropped")
    assert served.server.publish("room", "news") == 0
    event = await handler.next("dropped")
    assert (event.ws, event.args[0]) == (stuck, "news")
    assert (await reader_raw.recv())[2] == b"news"
    await stuck_raw.close()
    await reader_raw.close()


async def test_no_dropped_hook_with_close_on_backpressure_limit(
    serve: ServeFactory,
) -> None:
    """With close_on_backpressure_limit the socket closes instead: dropped is not called."""
    handler = DroppedRecorder(
        backpressure_limit=LIMIT, close_on_backpressure_limit=True
    )
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await fill(ws, until=0)
    assert [event.hook for event in drain_events(handler)] == ["close"]
    await raw.close()


def drain_events(handler: Recorder) -> list[Event]:
    """The events recorded so far."""
    events = []
    while not handler.events.empty():
        events.append(handler.events.get_nowait())
    return events


@pytest.mark.parametrize(
    "message",
    [bytearray(b"late"), memoryview(b"late"), b"late", "late"],
    ids=["bytearray", "memoryview", "bytes", "str"],
)
async def test_dropped_hook_gets_str_or_bytes(
    serve: ServeFactory, message: str | bytes | bytearray | memoryview
) -> None:
    """dropped gets the message as message would: str for text, bytes for any bytes-like sent."""
    handler = DroppedRecorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await fill(ws, until=0)
    await handler.next("dropped")
    assert ws.send(message) == 0
    got = (await handler.next("dropped")).args[0]
    expected = "late" if isinstance(message, str) else b"late"
    assert (type(got), got) == (type(expected), expected)
    await raw.close()


async def test_async_dropped_hook_is_not_called_for_what_it_drops_itself(
    serve: ServeFactory,
) -> None:
    """An async dropped hook whose own send is dropped is not called again for it."""
    handler = AsyncDroppedRecorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    sent = await fill(ws, until=0)
    assert (await handler.next("dropped")).args[0] == numbered(sent[-1][0])
    # A round trip through the socket's queue: a dropped("resync") would come first.
    await raw.send(OP_TEXT, b"mark")
    later: list[Event] = []
    while not later or later[-1].hook != "message":
        later.append(await handler.events.get())
    assert [event.hook for event in later] == ["message"]
    await raw.close()


class Counted(bytearray):
    """A bytearray that counts the copies ``bytes()`` makes of it."""

    copies = 0

    def __bytes__(self) -> bytes:
        self.copies += 1
        return bytes(memoryview(self))


STUCK = 3


async def stuck_subscribers(
    handler: Recorder, served: Any
) -> tuple[list[ServerWebSocket[Any]], ServerWebSocket[Any], list[Raw]]:
    """STUCK subscribers of "room" over their limit, and one more socket (the sender)."""
    raws: list[Raw] = []
    sockets: list[ServerWebSocket[Any]] = []
    for _ in range(STUCK + 1):
        raws.append(await connect(served.port))
        sockets.append((await handler.next("open")).ws)
    *stuck, sender = sockets
    for ws in stuck:
        ws.subscribe("room")
        await fill(ws, until=0)
    return stuck, sender, raws


SENDS = {
    "send": lambda stuck, sender, server, m: [ws.send(m) for ws in stuck],
    "send_binary": lambda stuck, sender, server, m: [ws.send_binary(m) for ws in stuck],
    "ws.publish": lambda stuck, sender, server, m: [sender.publish("room", m)],
    "server.publish": lambda stuck, sender, server, m: [server.publish("room", m)],
}


@pytest.mark.parametrize("how", list(SENDS), ids=list(SENDS))
async def test_a_dropped_bytes_like_is_copied_once_without_a_dropped_hook(
    serve: ServeFactory, how: str
) -> None:
    """A bytearray dropped for several slow sockets, with no dropped hook, is copied to bytes once per send or publish call, not once more per socket."""
    handler = Recorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    stuck, sender, raws = await stuck_subscribers(handler, served)
    message = Counted(b"late")
    codes = SENDS[how](stuck, sender, served.server, message)
    assert set(codes) == {0}
    assert message.copies == len(codes)
    for raw in raws:
        await raw.close()


@pytest.mark.parametrize("how", ["send", "send_binary", "ws.publish"])
async def test_a_dropped_bytes_like_reaches_the_dropped_hook_copied_once(
    serve: ServeFactory, how: str
) -> None:
    """With a dropped hook, each slow socket's hook gets bytes, and the bytearray was copied once per send or publish call."""
    handler = DroppedRecorder(backpressure_limit=LIMIT)
    served = await serve(handler)
    stuck, sender, raws = await stuck_subscribers(handler, served)
    drain_events(handler)  # the fills' own dropped messages
    message = Counted(b"late")
    codes = SENDS[how](stuck, sender, served.server, message)
    assert message.copies == len(codes)
    got = [(await handler.next("dropped")).args[0] for _ in stuck]
    assert [(type(m), m) for m in got] == [(bytes, b"late")] * STUCK
    for raw in raws:
        await raw.close()
