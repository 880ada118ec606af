"""permessage-deflate (RFC 7692) with the ``websockets`` and aiohttp clients and raw frames.

The ``compress`` flag of ``send``/``publish`` is a hint: it compresses (and sets
RSV1) only on a connection that negotiated the extension. A client that did not
would fail the connection on an RSV1 frame, so the unnegotiated cases below
prove the flag is ignored there.
"""

from __future__ import annotations

import asyncio
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import websockets.asyncio.client

from aiohttp_upgrade import PerMessageDeflate, ServerWebSocket
from aiohttp_upgrade._deflate import Compressor

from .conftest import Recorder, ServeFactory
from .flow_support import deflate_message, fill, inflate_message, read_raw_frame
from .wire import OP_CLOSE, OP_CONTINUATION, OP_TEXT, connect, parse_close

TEXT = "a compressible message, " * 200
OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate"}
TAKEOVER = PerMessageDeflate(decompress="dedicated")
"""Client context takeover: shared mode (the default) refuses it."""


class CompressingEcho(Recorder):
    """Records hooks and echoes each message back with ``compress=True``."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        super().message(ws, message)
        ws.send(message, compress=True)


class EchoClient:
    """One library client, reduced to what these tests need."""

    def __init__(
        self,
        send: Callable[[str], Any],
        receive: Callable[[], Any],
        extensions: str | None,
    ) -> None:
        self.send = send
        self.receive = receive
        self.extensions = extensions


@asynccontextmanager
async def library_client(name: str, url: str) -> AsyncIterator[EchoClient]:
    """Connect ``websockets`` or aiohttp's client, with or without a deflate offer.

    ``name`` is ``<library>-<deflate|plain>``.
    """
    library, mode = name.split("-")
    if library == "websockets":
        async with websockets.asyncio.client.connect(
            url,
            compression="deflate" if mode == "deflate" else None,
            ping_interval=None,
        ) as ws:
            assert ws.response is not None
            yield EchoClient(
                ws.send, ws.recv, ws.response.headers.get("Sec-WebSocket-Extensions")
            )
    else:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, compress=15 if mode == "deflate" else 0) as ws,
        ):
            yield EchoClient(
                ws.send_str,
                ws.receive_str,
                "permessage-deflate" if ws.compress else None,
            )


CLIENTS = ["websockets-deflate", "aiohttp-deflate", "websockets-plain", "aiohttp-plain"]


# -- negotiation with library clients ------------------------------------------------


@pytest.mark.parametrize("name", CLIENTS, ids=CLIENTS)
async def test_round_trip_with_compress_flag(serve: ServeFactory, name: str) -> None:
    """Messages sent with compress=True reach each client intact, negotiated or not."""
    handler = CompressingEcho(per_message_deflate=True)
    served = await serve(handler)
    async with library_client(name, served.url) as client:
        negotiated = name.endswith("-deflate")
        assert (client.extensions is not None) == negotiated
        for _ in range(3):  # the client may compress with context takeover
            await client.send(TEXT)
            assert await client.receive() == TEXT
        assert [(await handler.next("message")).args for _ in range(3)] == [(TEXT,)] * 3


@pytest.mark.parametrize(
    "name", ["websockets-deflate", "aiohttp-deflate"], ids=["websockets", "aiohttp"]
)
async def test_not_negotiated_when_server_disables_it(
    serve: ServeFactory, name: str
) -> None:
    """With per_message_deflate off (the default) an offer is declined and compress=True sends plain frames."""
    handler = CompressingEcho()
    served = await serve(handler)
    async with library_client(name, served.url) as client:
        assert client.extensions is None
        await client.send(TEXT)
        assert await client.receive() == TEXT


# -- what goes on the wire -----------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "compress", "rsv1"),
    [(True, True, True), (True, False, False), (False, True, False)],
    ids=["negotiated-compress", "negotiated-plain", "not-negotiated-compress"],
)
async def test_rsv1_only_when_negotiated_and_asked(
    serve: ServeFactory, offer: bool, compress: bool, rsv1: bool
) -> None:
    """RSV1 is set exactly when deflate was negotiated and send asked to compress."""
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER if offer else None)
    ws = (await handler.next("open")).ws
    ws.send(TEXT, compress=compress)
    frame = await read_raw_frame(raw.reader)
    assert frame.rsv1 is rsv1
    body = inflate_message(frame.payload) if rsv1 else frame.payload
    assert body == TEXT.encode()
    if rsv1:
        assert len(frame.payload) < len(TEXT) // 10
    await raw.close()


@pytest.mark.parametrize(
    ("options", "negotiated"),
    [
        (PerMessageDeflate(compress=False), True),
        (PerMessageDeflate(compress=False, decompress=False), False),
    ],
    ids=["compress-off", "both-off"],
)
async def test_compress_option_off_never_sets_rsv1(
    serve: ServeFactory, options: PerMessageDeflate, negotiated: bool
) -> None:
    """With compress=False the server never compresses; with decompress=False too it declines the offer."""
    handler = Recorder(per_message_deflate=options)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    assert ("Sec-WebSocket-Extensions" in raw.response.headers) is negotiated
    ws = (await handler.next("open")).ws
    ws.send(TEXT, compress=True)
    frame = await read_raw_frame(raw.reader)
    assert not frame.rsv1
    assert frame.payload == TEXT.encode()
    await raw.close()


async def test_server_no_context_takeover_is_the_default(serve: ServeFactory) -> None:
    """The server adds server_no_context_takeover unasked, and each message inflates on its own."""
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    extensions = raw.response.headers["Sec-WebSocket-Extensions"]
    assert "server_no_context_takeover" in extensions
    ws = (await handler.next("open")).ws
    ws.send(TEXT, compress=True)
    ws.send(TEXT, compress=True)
    first = await read_raw_frame(raw.reader)
    second = await read_raw_frame(raw.reader)
    assert first.payload == second.payload
    assert inflate_message(second.payload) == TEXT.encode()
    await raw.close()


async def test_context_takeover_when_enabled(serve: ServeFactory) -> None:
    """With server_no_context_takeover=False a repeated message compresses smaller and still decodes."""
    handler = Recorder(
        per_message_deflate=PerMessageDeflate(server_no_context_takeover=False)
    )
    served = await serve(handler)
    async with websockets.asyncio.client.connect(
        served.url, compression="deflate", ping_interval=None
    ) as client:
        assert client.response is not None
        extensions = client.response.headers["Sec-WebSocket-Extensions"]
        assert "server_no_context_takeover" not in extensions
        ws = (await handler.next("open")).ws
        before = ws.get_buffered_amount()
        sizes = []
        for _ in range(2):
            ws.send(TEXT, compress=True)
            sizes.append(ws.get_buffered_amount() - before)
            before = ws.get_buffered_amount()
            assert await client.recv() == TEXT
        assert sizes[1] < sizes[0]


@pytest.mark.parametrize(
    ("offer", "bits"),
    [
        ("permessage-deflate; server_max_window_bits=10", 10),
        ("permessage-deflate", 15),
    ],
    ids=["client-asks-10", "default-15"],
)
async def test_server_max_window_bits(
    serve: ServeFactory, offer: str, bits: int
) -> None:
    """The server compresses within the window the client allowed, and says so when below 15."""
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    raw = await connect(served.port, headers={"Sec-WebSocket-Extensions": offer})
    extensions = raw.response.headers["Sec-WebSocket-Extensions"]
    assert ("server_max_window_bits=10" in extensions) is (bits == 10)
    ws = (await handler.next("open")).ws
    ws.send(TEXT, compress=True)
    frame = await read_raw_frame(raw.reader)
    z = zlib.decompressobj(-bits)
    assert z.decompress(frame.payload + b"\x00\x00\xff\xff") == TEXT.encode()
    await raw.close()


async def test_fragmented_compressed_message_is_inflated(serve: ServeFactory) -> None:
    """A compressed message split over frames (RSV1 on the first only) is delivered inflated."""
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    body = deflate_message(TEXT.encode())
    half = len(body) // 2
    await raw.send(OP_TEXT, body[:half], fin=False, rsv=4)
    await raw.send(OP_CONTINUATION, body[half:])
    assert (await handler.next("message")).args == (TEXT,)
    await raw.close()


# -- publish -------------------------------------------------------------------------


async def test_publish_compresses_once_for_all_subscribers(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One publish with compress=True deflates once for three deflate subscribers and sends plain to a fourth."""
    calls = []
    original = Compressor.compress

    def counting(self: Compressor, payload: bytes) -> bytes:
        calls.append(len(payload))
        return original(self, payload)

    monkeypatch.setattr(Compressor, "compress", counting)
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    raws = [await connect(served.port, headers=OFFER) for _ in range(3)]
    raws.append(await connect(served.port))
    for _ in raws:
        (await handler.next("open")).ws.subscribe("room")
    assert served.server.publish("room", TEXT, compress=True) == len(TEXT)
    frames = [await read_raw_frame(raw.reader) for raw in raws]
    assert calls == [len(TEXT)]
    assert [frame.rsv1 for frame in frames] == [True, True, True, False]
    assert len({frame.payload for frame in frames[:3]}) == 1
    assert inflate_message(frames[0].payload) == frames[3].payload == TEXT.encode()
    for raw in raws:
        await raw.close()


async def test_dropped_message_is_not_compressed(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the backpressure limit, send(compress=True) returns 0 without spending CPU on deflate."""
    calls = []
    original = Compressor.compress

    def counting(self: Compressor, payload: bytes) -> bytes:
        calls.append(len(payload))
        return original(self, payload)

    monkeypatch.setattr(Compressor, "compress", counting)
    handler = Recorder(per_message_deflate=True, backpressure_limit=256 * 1024)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)  # never reads
    ws = (await handler.next("open")).ws
    await fill(ws, until=0)
    assert ws.send(TEXT, compress=True) == 0
    assert calls == []
    await raw.close()


# -- limits on inflated size ---------------------------------------------------------

MAX = 64 * 1024


@pytest.mark.parametrize(
    ("size", "code"), [(MAX, None), (MAX + 1, 1009)], ids=["at-limit", "over-limit"]
)
async def test_max_payload_length_applies_to_inflated_size(
    serve: ServeFactory, size: int, code: int | None
) -> None:
    """A compressed message inflating to max_payload_length is delivered; one byte more closes with 1009."""
    handler = Recorder(per_message_deflate=True, max_payload_length=MAX)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    await raw.send(OP_TEXT, deflate_message(b"z" * size), rsv=4)
    if code is None:
        assert (await handler.next("message")).args == ("z" * size,)
    else:
        frame = await read_raw_frame(raw.reader)
        assert frame.opcode == OP_CLOSE
        close_code, reason = parse_close(frame.payload)
        assert close_code == code
        assert (await handler.next("close")).args == (code, reason.decode())
    await raw.close()


async def test_zip_bomb_is_refused_without_inflating_it(serve: ServeFactory) -> None:
    """A 64 KiB message inflating to 64 MiB closes with 1009 while the process allocates under 4 MiB."""
    handler = Recorder(per_message_deflate=True, max_payload_length=MAX)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    await handler.next("open")
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1024 * 1024)
    bomb = b"".join(z.compress(block) for _ in range(64)) + z.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]
    assert len(bomb) < 128 * 1024
    tracemalloc.start()
    try:
        await raw.send(OP_TEXT, bomb, rsv=4)
        frame = await read_raw_frame(raw.reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parse_close(frame.payload)[0] == 1009
    assert (await handler.next("close")).args[0] == 1009
    assert peak < 4 * 1024 * 1024
    await raw.close()


# -- malformed DEFLATE streams (RFC 7692 7.2.2, 7.2.3.4) -----------------------------

RFC_HELLO_BFINAL = bytes.fromhex("f348cdc9c9070000")
"""RFC 7692 7.2.3.4: "Hello" in a final block (BFINAL set), then the stored-block header."""


def finished_message(data: bytes) -> bytes:
    """``data`` as one DEFLATE stream ended with a final block and nothing after it."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


@pytest.mark.parametrize(
    "offer",
    ["permessage-deflate", "permessage-deflate; client_no_context_takeover"],
    ids=["context-takeover", "no-context-takeover"],
)
async def test_junk_after_the_final_deflate_block_closes_with_1007(
    serve: ServeFactory, offer: str
) -> None:
    """A message with bytes after its final DEFLATE block closes with 1007, seen by the close hook."""
    handler = Recorder(per_message_deflate=TAKEOVER)
    served = await serve(handler)
    raw = await connect(served.port, headers={"Sec-WebSocket-Extensions": offer})
    await handler.next("open")
    await raw.send(OP_TEXT, finished_message(b"Hello") + b"junk", rsv=4)
    async with asyncio.timeout(10):
        event = await handler.events.get()
    assert (event.hook, event.args[0]) == ("close", 1007)  # and no message before
    frame = await read_raw_frame(raw.reader)
    assert frame.opcode == OP_CLOSE
    assert parse_close(frame.payload) == (1007, event.args[1].encode())
    await raw.close()


async def test_message_after_a_final_deflate_block_is_delivered(
    serve: ServeFactory,
) -> None:
    """With context takeover, messages after one that ended with a final block arrive intact, not empty."""
    handler = Recorder(per_message_deflate=TAKEOVER)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    assert (
        "client_no_context_takeover"
        not in raw.response.headers["Sec-WebSocket-Extensions"]
    )
    await raw.send(OP_TEXT, RFC_HELLO_BFINAL, rsv=4)
    await raw.send(OP_TEXT, deflate_message(b"world"), rsv=4)
    await raw.send(OP_TEXT, finished_message(TEXT.encode()), rsv=4)
    await raw.send(OP_TEXT, deflate_message(TEXT.encode()), rsv=4)
    received = [(await handler.next("message")).args[0] for _ in range(4)]
    assert received == ["Hello", "world", TEXT, TEXT]
    await raw.close()


async def test_message_after_a_final_block_may_refer_to_earlier_messages(
    serve: ServeFactory,
) -> None:
    """A message after one that ended with a final block may refer to the messages before that one (RFC 7692 7.2.2)."""
    handler = Recorder(per_message_deflate=TAKEOVER)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    client = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = client.compress(TEXT.encode()) + client.flush(zlib.Z_SYNC_FLUSH)
    await raw.send(OP_TEXT, first[:-4], rsv=4)
    await raw.send(OP_TEXT, client.compress(b"x") + client.flush(), rsv=4)
    z = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=TEXT.encode() + b"x")
    third = (z.compress(TEXT.encode()) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(third) < 64  # all back-references into the first message
    await raw.send(OP_TEXT, third, rsv=4)
    received = [(await handler.next("message")).args[0] for _ in range(3)]
    assert received == [TEXT, "x", TEXT]
    await raw.close()
