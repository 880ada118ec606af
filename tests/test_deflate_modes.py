"""Bun's and uWebSockets' compression modes: shared (the default) and dedicated.

Shared mode negotiates ``server_no_context_takeover; client_no_context_takeover``:
one compressor per event loop serves every socket, each message flushed so that it
inflates on its own, and every compressed message a client sends is inflated from
an empty window, so that no client can refer into another one's data. Dedicated
mode keeps a compressor and a decompressor per socket (context takeover), created
at the first compressed message each way, never at the upgrade.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

import pytest
import websockets.asyncio.client

from aiohttp_upgrade import PerMessageDeflate, ServerWebSocket
from aiohttp_upgrade import _deflate_modes as modes
from aiohttp_upgrade._deflate import Compressor, negotiate_deflate

from .conftest import Recorder, ServeFactory
from .flow_support import deflate_message, read_raw_frame
from .test_compression import CompressingEcho, library_client
from .wire import OP_CLOSE, OP_TEXT, connect, parse_close

TEXT = "a compressible message, " * 200
OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate"}
BOTH = "server_no_context_takeover; client_no_context_takeover"
SECRET = b"alice's session token is 5f2b9c71e04d and her PIN is 4471; " * 4


def inflate_alone(payload: bytes) -> bytes:
    """Inflate one message with a fresh decompressor (no earlier history)."""
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


# -- negotiation: the response to each offer -------------------------------------------

SHARED = PerMessageDeflate()
DEDICATED = PerMessageDeflate(compress="dedicated", decompress="dedicated")

ANSWERS = [
    (SHARED, "permessage-deflate", f"permessage-deflate; {BOTH}"),
    (
        SHARED,
        "permessage-deflate; client_max_window_bits",
        f"permessage-deflate; {BOTH}",
    ),
    (
        SHARED,
        "permessage-deflate; server_max_window_bits=10",
        f"permessage-deflate; {BOTH}; server_max_window_bits=10",
    ),
    (
        SHARED,
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        f"permessage-deflate; {BOTH}",
    ),
    (
        SHARED,
        "x-webkit-deflate-frame, permessage-deflate",
        f"permessage-deflate; {BOTH}",
    ),
    (
        SHARED,
        "permessage-deflate; foo, permessage-deflate",
        f"permessage-deflate; {BOTH}",
    ),
    (DEDICATED, "permessage-deflate", "permessage-deflate"),
    (DEDICATED, "permessage-deflate; client_max_window_bits", "permessage-deflate"),
    (DEDICATED, "permessage-deflate; client_max_window_bits=10", "permessage-deflate"),
    (
        DEDICATED,
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
    ),
    (
        DEDICATED,
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
    ),
    (
        DEDICATED,
        "permessage-deflate; server_max_window_bits=12",
        "permessage-deflate; server_max_window_bits=12",
    ),
    (
        PerMessageDeflate(compress="8KB"),
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
    ),
    (
        PerMessageDeflate(compress="8KB"),
        "permessage-deflate; server_max_window_bits=9",
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=9",
    ),
    (
        PerMessageDeflate(decompress="16KB"),
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=11",
    ),
    (
        PerMessageDeflate(decompress="16KB"),
        "permessage-deflate; client_max_window_bits=9",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
    ),
    (
        PerMessageDeflate(decompress="16KB"),
        "permessage-deflate",
        f"permessage-deflate; {BOTH}",
    ),
    (
        PerMessageDeflate(compress="disable"),
        "permessage-deflate",
        f"permessage-deflate; {BOTH}",
    ),
    (
        PerMessageDeflate(decompress=False),
        "permessage-deflate",
        f"permessage-deflate; {BOTH}",
    ),
    (
        PerMessageDeflate(server_no_context_takeover=False),
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover",
    ),
    (
        PerMessageDeflate(
            server_no_context_takeover=False, client_no_context_takeover=False
        ),
        "permessage-deflate",
        "permessage-deflate",
    ),
]


@pytest.mark.parametrize(
    ("options", "offer", "response"),
    ANSWERS,
    ids=[f"{o.compress}/{o.decompress}:{offer}" for o, offer, _ in ANSWERS],
)
def test_negotiation_answers_each_offer(
    options: PerMessageDeflate, offer: str, response: str
) -> None:
    """Each mode answers each offer with the parameters RFC 7692 7.1 lets it choose."""
    params = negotiate_deflate(offer, options)
    assert params is not None
    assert params.response == response


HOSTILE = [
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits=9; client_max_window_bits=10",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=1a",
    "permessage-deflate; server_max_window_bits=-9",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; foo=1",
    "permessage-deflate;;",
    "x-webkit-deflate-frame",
]


@pytest.mark.parametrize("offer", HOSTILE, ids=HOSTILE)
@pytest.mark.parametrize("options", [SHARED, DEDICATED], ids=["shared", "dedicated"])
def test_malformed_offer_is_declined(options: PerMessageDeflate, offer: str) -> None:
    """Duplicated, unknown or malformed parameters decline the offer in every mode."""
    assert negotiate_deflate(offer, options) is None


def test_both_directions_disabled_declines() -> None:
    """compress and decompress both "disable": the extension is not negotiated."""
    options = PerMessageDeflate(compress="disable", decompress="disable")
    assert negotiate_deflate("permessage-deflate", options) is None


def test_shared_compressor_is_one_object_for_every_socket() -> None:
    """Two sockets negotiated in shared mode get the same compressor and inflater."""
    first = negotiate_deflate("permessage-deflate", SHARED)
    second = negotiate_deflate("permessage-deflate; client_max_window_bits", SHARED)
    assert first is not None and second is not None
    assert first.new_compressor() is second.new_compressor() is not None
    assert first.new_inflater(1000) is second.new_inflater(1000)


def test_shared_compressor_flushes_each_message_on_its_own() -> None:
    """Messages from the shared compressor each inflate with a fresh decompressor."""
    params = negotiate_deflate("permessage-deflate", SHARED)
    assert params is not None
    compressor = params.new_compressor()
    assert compressor is not None
    first = compressor.compress(TEXT.encode())
    second = compressor.compress(TEXT.encode())
    assert first == second
    assert inflate_alone(second) == TEXT.encode()


def test_shared_compressor_output_never_depends_on_earlier_messages() -> None:
    """After any messages, the shared compressor gives what a fresh stream gives (100 seeded random messages)."""
    rng = random.Random(17)
    words = [rng.randbytes(rng.randrange(1, 12)) for _ in range(40)]
    shared = Compressor(15, 6, no_context_takeover=True)
    for _ in range(100):
        size = rng.choice((1, 10, 300, 5000, 40000))
        data = b" ".join(rng.choice(words) for _ in range(size // 6 + 1))[:size]
        fresh = Compressor(15, 6, no_context_takeover=True)
        body = shared.compress(data)
        assert body == fresh.compress(data)
        assert inflate_alone(body) == data


# -- options ---------------------------------------------------------------------------

VALUES = [
    True,
    False,
    "disable",
    "shared",
    "dedicated",
    "3KB",
    "4KB",
    "8KB",
    "16KB",
    "32KB",
    "64KB",
    "128KB",
    "256KB",
]


@pytest.mark.parametrize("value", VALUES, ids=str)
def test_bun_values_are_accepted(value: bool | str) -> None:
    """Every value of Bun's compress and decompress options is accepted for both."""
    options = PerMessageDeflate(compress=value, decompress=value)
    assert (options.compress, options.decompress) == (value, value)


@pytest.mark.parametrize("name", ["compress", "decompress"])
@pytest.mark.parametrize("value", ["9KB", "SHARED", "", 1, None], ids=repr)
def test_unknown_value_is_refused_when_defined(name: str, value: object) -> None:
    """An unknown mode raises InvalidOptionError naming the option and the values."""
    with pytest.raises(Exception) as info:
        PerMessageDeflate(**{name: value})  # type: ignore[arg-type]
    assert type(info.value).__name__ == "InvalidOptionError"
    assert info.value.option == f"per_message_deflate.{name}"  # type: ignore[attr-defined]
    assert '"shared"' in str(info.value) and '"256KB"' in str(info.value)


def test_bun_object_form_is_accepted() -> None:
    """per_message_deflate={"compress": ..., "decompress": ...} works as in Bun."""
    handler = Recorder(per_message_deflate={"compress": "8KB", "decompress": "shared"})
    assert handler.options.per_message_deflate == PerMessageDeflate(
        compress="8KB", decompress="shared"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compress": "dedicated", "server_no_context_takeover": True},
        {"decompress": "16KB", "client_no_context_takeover": True},
        {"compress": "shared", "server_no_context_takeover": False},
        {"server_no_context_takeover": "yes"},
    ],
    ids=["dedicated-compress", "sized-decompress", "shared-compress", "not-a-bool"],
)
def test_mode_contradicting_a_legacy_flag_is_refused(kwargs: dict[str, Any]) -> None:
    """A mode and an old context-takeover flag that say the opposite (or a flag that is no bool) are refused."""
    with pytest.raises(ValueError, match="per_message_deflate"):
        PerMessageDeflate(**kwargs)


# -- shared mode on the wire -------------------------------------------------------------


async def test_shared_mode_frames_inflate_on_their_own(serve: ServeFactory) -> None:
    """In shared mode the same message is the same bytes on every socket, each inflating alone."""
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    raws = [await connect(served.port, headers=OFFER) for _ in range(2)]
    sockets = [(await handler.next("open")).ws for _ in raws]
    sockets[0].send(TEXT, compress=True)
    sockets[1].send("something else entirely, " * 50, compress=True)
    sockets[1].send(TEXT, compress=True)
    first = await read_raw_frame(raws[0].reader)
    await read_raw_frame(raws[1].reader)
    again = await read_raw_frame(raws[1].reader)
    assert first.rsv1 and again.rsv1
    assert first.payload == again.payload
    assert inflate_alone(again.payload) == TEXT.encode()
    for raw in raws:
        await raw.close()


async def close_code_after(serve: ServeFactory, *payloads: bytes) -> tuple[int, str]:
    """Alice sends SECRET; Bob then sends ``payloads``; return Bob's close code and
    what Bob's messages delivered (the joined text)."""
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    alice = await connect(served.port, headers=OFFER)
    alice_ws = (await handler.next("open")).ws
    bob = await connect(served.port, headers=OFFER)
    bob_ws = (await handler.next("open")).ws
    await alice.send(OP_TEXT, deflate_message(SECRET), rsv=4)
    event = await handler.next("message")
    assert (event.ws, event.args) == (alice_ws, (SECRET.decode(),))
    for payload in payloads:
        await bob.send(OP_TEXT, payload, rsv=4)
    delivered = []
    async with asyncio.timeout(10):
        while (event := await handler.events.get()).hook != "close":
            assert (event.hook, event.ws) == ("message", bob_ws)
            delivered.append(event.args[0])
    assert event.ws is bob_ws
    frame = await read_raw_frame(bob.reader)
    assert frame.opcode == OP_CLOSE
    assert parse_close(frame.payload)[0] == event.args[0]
    await alice.close()
    await bob.close()
    return event.args[0], "".join(delivered)


def refers_back(history: bytes, data: bytes) -> bytes:
    """``data`` compressed against ``history`` (as a client keeping its window would)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=history)
    body = (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(body) < len(data) // 8  # back-references, not literals
    return body


async def test_back_reference_into_another_clients_message_fails(
    serve: ServeFactory,
) -> None:
    """In shared mode a back-reference into another client's message closes with 1007, leaking nothing."""
    code, delivered = await close_code_after(serve, refers_back(SECRET, SECRET))
    assert code == 1007
    assert "5f2b9c71e04d" not in delivered


async def test_back_reference_into_own_earlier_message_fails_in_shared_mode(
    serve: ServeFactory,
) -> None:
    """A client ignoring client_no_context_takeover has its back-reference refused with 1007."""
    mine = b"bob's own earlier message, quite repetitive. " * 8
    code, delivered = await close_code_after(
        serve, deflate_message(mine), refers_back(mine, mine)
    )
    assert code == 1007
    assert delivered == mine.decode()


async def test_publish_in_shared_mode_creates_no_zlib_stream(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishes to compressing subscribers reuse the shared compressor: no zlib stream per message."""
    handler = Recorder(per_message_deflate=True)
    served = await serve(handler)
    raws = [await connect(served.port, headers=OFFER) for _ in range(3)]
    for _ in raws:
        (await handler.next("open")).ws.subscribe("room")
    created = []
    original = zlib.compressobj

    def counting(*args: Any, **kwargs: Any) -> Any:
        created.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(zlib, "compressobj", counting)
    for n in range(5):
        served.server.publish("room", f"{n} {TEXT}", compress=True)
    frames = [[await read_raw_frame(raw.reader) for _ in range(5)] for raw in raws]
    assert len(created) <= 1  # the loop's shared compressor, if it was not made yet
    assert frames[0] == frames[1] == frames[2]
    for raw in raws:
        await raw.close()


async def test_publish_mixes_shared_dedicated_and_plain_subscribers(
    serve: ServeFactory,
) -> None:
    """One publish gives the shared frame to sockets that refused context takeover, a frame with context to dedicated ones, plain to others."""
    handler = Recorder(per_message_deflate=DEDICATED)
    served = await serve(handler)
    no_takeover = {
        "Sec-WebSocket-Extensions": "permessage-deflate; server_no_context_takeover"
    }
    raws = [
        await connect(served.port, headers=headers)
        for headers in (no_takeover, OFFER, None, no_takeover)
    ]
    for _ in raws:
        (await handler.next("open")).ws.subscribe("room")
    for _ in range(2):
        served.server.publish("room", TEXT, compress=True)
    frames = [[await read_raw_frame(raw.reader) for _ in range(2)] for raw in raws]
    shared, dedicated, plain, shared_too = frames
    assert shared == shared_too
    assert shared[0].payload == shared[1].payload
    assert inflate_alone(shared[1].payload) == TEXT.encode()
    assert len(dedicated[1].payload) < len(dedicated[0].payload)
    client = zlib.decompressobj(-15)
    for frame in dedicated:
        assert client.decompress(frame.payload + b"\x00\x00\xff\xff") == TEXT.encode()
    assert [(f.rsv1, f.payload) for f in plain] == [(False, TEXT.encode())] * 2
    for raw in raws:
        await raw.close()


# -- dedicated mode: lazy streams ----------------------------------------------------------


async def test_dedicated_streams_are_created_lazily(serve: ServeFactory) -> None:
    """Dedicated zlib streams are made at a socket's first compressed message each way, not at the upgrade."""
    handler = CompressingEcho(per_message_deflate=DEDICATED)
    served = await serve(handler)
    before = modes.DEDICATED_STREAMS.snapshot()
    raws = [await connect(served.port, headers=OFFER) for _ in range(3)]
    sockets: list[ServerWebSocket[Any]] = [
        (await handler.next("open")).ws for _ in raws
    ]
    assert raws[0].response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
    assert modes.DEDICATED_STREAMS.snapshot() == before
    sockets[0].send(TEXT, compress=True)
    await read_raw_frame(raws[0].reader)
    assert modes.DEDICATED_STREAMS.snapshot() == (before[0] + 1, before[1])
    await raws[1].send(OP_TEXT, deflate_message(TEXT.encode()), rsv=4)
    assert (await handler.next("message")).args == (TEXT,)
    await read_raw_frame(raws[1].reader)  # the echo: socket 1's compressor
    assert modes.DEDICATED_STREAMS.snapshot() == (before[0] + 2, before[1] + 1)
    for raw in raws:
        await raw.close()


async def test_dedicated_mode_keeps_the_clients_context(serve: ServeFactory) -> None:
    """In dedicated mode a client's message may refer back into its own earlier ones."""
    handler = Recorder(per_message_deflate=DEDICATED)
    served = await serve(handler)
    raw = await connect(served.port, headers=OFFER)
    await handler.next("open")
    client = zlib.compressobj(6, zlib.DEFLATED, -15)
    for _ in range(2):
        body = client.compress(TEXT.encode()) + client.flush(zlib.Z_SYNC_FLUSH)
        await raw.send(OP_TEXT, body[:-4], rsv=4)
    assert [(await handler.next("message")).args for _ in range(2)] == [(TEXT,)] * 2
    await raw.close()


# -- interop with library clients ----------------------------------------------------------

MODES = {
    "shared": True,
    "dedicated": DEDICATED,
    "8KB": PerMessageDeflate(compress="8KB", decompress="8KB"),
    "mixed": PerMessageDeflate(compress="shared", decompress="dedicated"),
}
LIBRARIES = ["websockets-deflate", "aiohttp-deflate"]


@pytest.mark.parametrize("library", LIBRARIES, ids=["websockets", "aiohttp"])
@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
async def test_library_client_round_trip(
    serve: ServeFactory, mode: str, library: str
) -> None:
    """websockets' and aiohttp's clients negotiate each mode and exchange compressed messages both ways."""
    handler = CompressingEcho(per_message_deflate=MODES[mode])
    served = await serve(handler)
    async with library_client(library, served.url) as client:
        assert client.extensions is not None
        for n in range(4):  # the clients compress with context takeover if allowed
            await client.send(f"{n} {TEXT}")
            assert await client.receive() == f"{n} {TEXT}"


async def test_websockets_client_sees_the_shared_parameters(
    serve: ServeFactory,
) -> None:
    """The websockets client accepts client_no_context_takeover it did not offer (RFC 7692 7.1.1.2)."""
    served = await serve(CompressingEcho(per_message_deflate=True))
    async with websockets.asyncio.client.connect(
        served.url, compression="deflate", ping_interval=None
    ) as client:
        assert client.response is not None
        extensions = client.response.headers["Sec-WebSocket-Extensions"]
        assert extensions == f"permessage-deflate; {BOTH}"
        await client.send(TEXT)
        assert await client.recv() == TEXT
