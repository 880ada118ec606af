"""``ServerWebSocket``'s public API and hook dispatch, against real clients."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aiohttp_upgrade import ReadyState, Server, ServerWebSocket, WebSocketHandler

from .conftest import ConnectRaw, Recorder, ServeFactory, upgrade_with_data
from .redis_support import wait_until
from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Raw,
    parse_close,
)


async def frames_until_eof(raw: Raw) -> list[tuple[bool, int, bytes]]:
    """Read server frames until the server ends the TCP connection."""
    frames = []
    while True:
        try:
            frames.append(await raw.recv())
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return frames


def state_of(ws: ServerWebSocket[Any]) -> ReadyState:
    """ws.ready_state, read afresh (keeps mypy from narrowing it across awaits)."""
    return ws.ready_state


RawPair = tuple[Raw, ServerWebSocket[Any], Recorder]


@pytest.fixture
async def raw_pair(serve: ServeFactory, connect_raw: ConnectRaw) -> RawPair:
    """A Recorder-served socket with a raw client connected to it."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    event = await handler.next("open")
    return raw, event.ws, handler


# -- data, remote_address, ready_state, subprotocol ------------------------------------


@dataclass
class Session:
    user_id: str
    seen: int = 0


class Greeter(WebSocketHandler[Session]):
    """Uses ws.data with its real type (checked by mypy --strict)."""

    def open(self, ws: ServerWebSocket[Session]) -> None:
        ws.send(f"hello {ws.data.user_id}")

    def message(self, ws: ServerWebSocket[Session], message: str | bytes) -> None:
        if message == "rename":
            ws.data = Session(user_id="renamed", seen=ws.data.seen)
        ws.data.seen += 1
        ws.send(f"{ws.data.user_id}:{ws.data.seen}")


async def test_data_is_what_upgrade_attached(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """ws.data is the object passed to upgrade(data=...), visible from the open hook."""
    served = await serve(Greeter(), upgrade_with_data(Session("u1")))
    async with client_session.ws_connect(served.url) as ws:
        assert await ws.receive_str() == "hello u1"


async def test_data_is_writable_and_persists_between_messages(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """ws.data can be mutated and replaced, and the change is seen by later hooks."""
    served = await serve(Greeter(), upgrade_with_data(Session("u1")))
    async with client_session.ws_connect(served.url) as ws:
        await ws.receive_str()
        await ws.send_str("a")
        assert await ws.receive_str() == "u1:1"
        await ws.send_str("rename")
        assert await ws.receive_str() == "renamed:2"
        await ws.send_str("b")
        assert await ws.receive_str() == "renamed:3"


async def test_remote_address_is_the_client_ip(raw_pair: RawPair) -> None:
    """ws.remote_address is the client's IP address."""
    _raw, ws, _ = raw_pair
    assert ws.remote_address == "127.0.0.1"


def conn_id(ws: ServerWebSocket[Any]) -> str:
    """The ``conn <id>`` that repr(ws) shows."""
    found = re.search(r"\bconn (\w+)", repr(ws))
    assert found is not None, repr(ws)
    return found.group(1)


async def test_two_sockets_from_one_address_have_different_ids(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """repr(ws) names a per-connection id: two sockets from 127.0.0.1 differ."""
    handler = Recorder()
    served = await serve(handler)
    await connect_raw(served.port)
    first = (await handler.next("open")).ws
    await connect_raw(served.port)
    second = (await handler.next("open")).ws
    assert first.remote_address == second.remote_address
    assert conn_id(first) != conn_id(second)


async def test_protocol_error_log_line_names_the_connection_id(
    raw_pair: RawPair, caplog: pytest.LogCaptureFixture
) -> None:
    """The line logged for a protocol error carries the socket's ``conn <id>``."""
    raw, ws, handler = raw_pair
    with caplog.at_level(logging.INFO, logger="aiohttp_upgrade"):
        raw.writer.write(bytes((0x81, 0x02)) + b"hi")  # unmasked: 1002
        await handler.next("close")
    lines = [r.getMessage() for r in caplog.records if "1002" in r.getMessage()]
    assert len(lines) == 1
    assert f"conn {conn_id(ws)}" in lines[0]


async def test_ready_state_is_open_then_closed(raw_pair: RawPair) -> None:
    """ready_state is OPEN (1, as Bun reports) while open, CLOSING (2) during the
    closing handshake and CLOSED (3) after it."""
    raw, ws, handler = raw_pair
    assert state_of(ws) is ReadyState.OPEN
    assert int(state_of(ws)) == 1
    ws.close()
    await handler.next("close")
    assert int(state_of(ws)) == 2
    await raw.close()
    await wait_until(lambda: state_of(ws) is ReadyState.CLOSED, what="CLOSED")
    assert int(state_of(ws)) == 3


def test_ready_state_numbers_match_bun() -> None:
    """ReadyState has Bun's (and the browser's) numbers."""
    assert [(s.name, s.value) for s in ReadyState] == [
        ("CONNECTING", 0),
        ("OPEN", 1),
        ("CLOSING", 2),
        ("CLOSED", 3),
    ]


# -- send / send_text / send_binary ------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "opcode", "payload"),
    [
        ("héllo", OP_TEXT, "héllo".encode()),
        (b"\x00\x01", OP_BINARY, b"\x00\x01"),
        (bytearray(b"ba"), OP_BINARY, b"ba"),
        (memoryview(b"mv"), OP_BINARY, b"mv"),
    ],
    ids=["str", "bytes", "bytearray", "memoryview"],
)
async def test_send_returns_byte_length_and_picks_the_frame_type(
    raw_pair: RawPair, message: str | bytes, opcode: int, payload: bytes
) -> None:
    """send() returns the payload's byte length; str goes as text, bytes-like as binary."""
    raw, ws, _ = raw_pair
    assert ws.send(message) == len(payload)
    assert await raw.recv() == (True, opcode, payload)


@pytest.mark.parametrize(
    ("method", "message", "opcode"),
    [("send_text", "txt", OP_TEXT), ("send_binary", b"bin", OP_BINARY)],
    ids=["send_text", "send_binary"],
)
async def test_send_text_and_send_binary_send_their_type(
    raw_pair: RawPair, method: str, message: str | bytes, opcode: int
) -> None:
    """send_text sends a text frame and send_binary a binary one, returning the length."""
    raw, ws, _ = raw_pair
    assert getattr(ws, method)(message) == 3
    assert await raw.recv() == (True, opcode, b"txt" if opcode == OP_TEXT else b"bin")


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("send", 42),
        ("send", None),
        ("send", ["list"]),
        ("send_text", b"bytes"),
        ("send_text", 1),
        ("send_binary", "str"),
        ("send_binary", 1),
    ],
    ids=[
        "send-int",
        "send-none",
        "send-list",
        "send_text-bytes",
        "send_text-int",
        "send_binary-str",
        "send_binary-int",
    ],
)
async def test_wrong_message_type_is_type_error(
    raw_pair: RawPair, method: str, message: object
) -> None:
    """Sending a value of the wrong type raises TypeError and sends nothing."""
    raw, ws, _ = raw_pair
    with pytest.raises(TypeError):
        getattr(ws, method)(message)
    ws.send("after")
    assert await raw.recv() == (True, OP_TEXT, b"after")


@pytest.mark.parametrize(
    ("message", "opcode"), [("", OP_TEXT), (b"", OP_BINARY)], ids=["text", "binary"]
)
async def test_empty_message_returns_0_and_is_still_sent(
    raw_pair: RawPair, message: str | bytes, opcode: int
) -> None:
    """An empty payload returns 0, as in Bun, and the empty frame still reaches the client."""
    raw, ws, _ = raw_pair
    assert ws.send(message) == 0
    assert await raw.recv() == (True, opcode, b"")


async def test_send_after_close_returns_0(raw_pair: RawPair) -> None:
    """Every send method returns 0 once the socket is closed."""
    _raw, ws, handler = raw_pair
    ws.close()
    await handler.next("close")
    assert ws.send("x") == 0
    assert ws.send_text("x") == 0
    assert ws.send_binary(b"x") == 0
    assert ws.ping(b"x") == 0
    assert ws.pong(b"x") == 0


async def test_send_with_compress_but_no_deflate_sends_plain(raw_pair: RawPair) -> None:
    """compress=True without negotiated permessage-deflate sends an uncompressed frame."""
    raw, ws, _ = raw_pair
    assert ws.send("plain", compress=True) == 5
    first, second = await raw.reader.readexactly(2)
    assert first & 0x40 == 0
    assert await raw.reader.readexactly(second) == b"plain"


async def test_sends_in_one_turn_arrive_in_order(raw_pair: RawPair) -> None:
    """Several sends without an await in between arrive in the order they were made."""
    raw, ws, _ = raw_pair
    for i in range(5):
        ws.send(str(i))
    assert [(await raw.recv())[2] for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]


# -- ping / pong ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "opcode"), [("ping", OP_PING), ("pong", OP_PONG)], ids=["ping", "pong"]
)
@pytest.mark.parametrize(
    "data", [b"", b"p" * 125, "str"], ids=["empty", "125-bytes", "str"]
)
async def test_ping_and_pong_reach_the_client(
    raw_pair: RawPair, method: str, opcode: int, data: bytes | str
) -> None:
    """ws.ping()/ws.pong() send the control frame with its payload and return its length."""
    raw, ws, _ = raw_pair
    payload = data.encode() if isinstance(data, str) else data
    assert getattr(ws, method)(data) == len(payload)
    assert await raw.recv() == (True, opcode, payload)


@pytest.mark.parametrize("method", ["ping", "pong"], ids=["ping", "pong"])
async def test_ping_or_pong_over_125_bytes_is_value_error(
    raw_pair: RawPair, method: str
) -> None:
    """A ping or pong payload over 125 bytes raises ValueError (RFC 6455 5.5)."""
    _raw, ws, _ = raw_pair
    with pytest.raises(ValueError, match="125"):
        getattr(ws, method)(b"x" * 126)


async def test_client_ping_is_answered_and_reported(raw_pair: RawPair) -> None:
    """A client ping gets a pong with the same payload, then the ping hook runs."""
    raw, _, handler = raw_pair
    await raw.send(OP_PING, b"are you there")
    assert await raw.recv() == (True, OP_PONG, b"are you there")
    assert (await handler.next("ping")).args == (b"are you there",)


async def test_client_pong_is_reported(raw_pair: RawPair) -> None:
    """A client pong runs the pong hook with its payload."""
    raw, _, handler = raw_pair
    await raw.send(OP_PONG, b"beat")
    assert (await handler.next("pong")).args == (b"beat",)


# -- close / terminate ------------------------------------------------------------------------


async def test_close_is_idempotent(raw_pair: RawPair) -> None:
    """Calling close() twice sends one Close frame, with the first call's code."""
    raw, ws, handler = raw_pair
    ws.close(4001, "first")
    ws.close(4002, "second")
    frames = await frames_until_eof(raw)
    assert frames == [(True, OP_CLOSE, b"\x0f\xa1first")]
    assert (await handler.next("close")).args == (4001, "first")


async def test_close_defaults_to_1000_with_no_reason(raw_pair: RawPair) -> None:
    """ws.close() sends code 1000 and an empty reason."""
    raw, ws, _ = raw_pair
    ws.close()
    _, opcode, payload = await raw.recv()
    assert (opcode, parse_close(payload)) == (OP_CLOSE, (1000, b""))


@pytest.mark.parametrize(
    ("reason", "expected_length"),
    [
        ("a" * 200, 123),
        ("é" * 100, 122),
        ("€" * 50, 123),
        ("a" + "€" * 50, 121),
        ("😀" * 40, 120),
        ("a" * 123, 123),
    ],
    ids=["ascii", "2-byte", "3-byte-fits", "3-byte-cut", "4-byte", "exactly-123"],
)
async def test_close_reason_is_cut_to_123_bytes_on_a_character_boundary(
    raw_pair: RawPair, reason: str, expected_length: int
) -> None:
    """A long close reason is cut to at most 123 bytes without splitting a character."""
    raw, ws, _ = raw_pair
    ws.close(1000, reason)
    _, _, payload = await raw.recv()
    _, sent = parse_close(payload)
    assert len(sent) == expected_length
    assert reason.startswith(sent.decode("utf-8"))


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 5000], ids=str)
async def test_close_with_a_code_that_cannot_be_sent_is_value_error(
    raw_pair: RawPair, code: int
) -> None:
    """ws.close() with a reserved or out-of-range code raises ValueError; the socket stays open."""
    _raw, ws, _ = raw_pair
    with pytest.raises(ValueError, match=str(code)):
        ws.close(code)
    assert ws.ready_state is ReadyState.OPEN


async def test_terminate_drops_the_connection_without_a_close_frame(
    raw_pair: RawPair,
) -> None:
    """terminate() ends TCP at once: the client gets no Close frame, the hook gets 1006."""
    raw, ws, handler = raw_pair
    ws.terminate()
    assert await frames_until_eof(raw) == []
    assert (await handler.next("close")).args == (1006, "")
    assert state_of(ws) is ReadyState.CLOSED


async def test_terminate_after_close_does_nothing(raw_pair: RawPair) -> None:
    """terminate() after close() keeps the close code and the Close frame."""
    raw, ws, handler = raw_pair
    ws.close(4000)
    ws.terminate()
    frames = await frames_until_eof(raw)
    assert [opcode for _, opcode, _ in frames] == [OP_CLOSE]
    assert (await handler.next("close")).args == (4000, "")


# -- get_buffered_amount / cork ---------------------------------------------------------------


async def test_buffered_amount_counts_unwritten_bytes(raw_pair: RawPair) -> None:
    """get_buffered_amount() is 0 when idle and covers a send not yet written."""
    raw, ws, _ = raw_pair
    assert ws.get_buffered_amount() == 0
    ws.send_binary(b"x" * 1000)
    assert ws.get_buffered_amount() >= 1000
    await raw.recv()
    assert ws.get_buffered_amount() == 0


async def test_buffered_amount_is_0_once_closed(raw_pair: RawPair) -> None:
    """get_buffered_amount() is 0 after the connection is gone."""
    _raw, ws, handler = raw_pair
    ws.send_binary(b"x" * 1000)
    ws.terminate()
    await handler.next("close")
    assert ws.get_buffered_amount() == 0


async def test_cork_sends_everything_and_returns_the_callback_result(
    raw_pair: RawPair,
) -> None:
    """Sends inside cork() arrive in order, and cork() returns what the callback returned."""
    raw, ws, _ = raw_pair

    def batch(sock: ServerWebSocket[Any]) -> list[int]:
        return [sock.send("a"), sock.send_binary(b"bb"), sock.ping(b"c")]

    assert ws.cork(batch) == [1, 2, 1]
    frames = [await raw.recv() for _ in range(3)]
    assert frames == [
        (True, OP_TEXT, b"a"),
        (True, OP_BINARY, b"bb"),
        (True, OP_PING, b"c"),
    ]


async def test_cork_writes_before_returning(raw_pair: RawPair) -> None:
    """After cork() returns, its sends are no longer pending in the socket."""
    raw, ws, _ = raw_pair
    ws.cork(lambda sock: sock.send_binary(b"y" * 100))
    assert ws.get_buffered_amount() == 0
    assert await raw.recv() == (True, OP_BINARY, b"y" * 100)


async def test_cork_propagates_the_callback_exception(raw_pair: RawPair) -> None:
    """An exception in the cork callback propagates, and what it sent first still arrives."""
    raw, ws, _ = raw_pair

    def failing(sock: ServerWebSocket[Any]) -> None:
        sock.send("before")
        raise LookupError("boom")

    with pytest.raises(LookupError):
        ws.cork(failing)
    assert await raw.recv() == (True, OP_TEXT, b"before")


# -- hooks: sync and async, in order -------------------------------------------------------------


class SyncHooks(WebSocketHandler[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def open(self, ws: ServerWebSocket[Any]) -> None:
        self.calls.put_nowait(("open",))

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.calls.put_nowait(("message", message))
        ws.send(message)

    def ping(self, ws: ServerWebSocket[Any], data: bytes) -> None:
        self.calls.put_nowait(("ping", data))

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.calls.put_nowait(("close", code, reason))


class AsyncHooks(WebSocketHandler[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def open(self, ws: ServerWebSocket[Any]) -> None:
        self.calls.put_nowait(("open",))

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.calls.put_nowait(("message", message))
        ws.send(message)

    async def ping(self, ws: ServerWebSocket[Any], data: bytes) -> None:
        self.calls.put_nowait(("ping", data))

    async def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.calls.put_nowait(("close", code, reason))


@pytest.mark.parametrize("hooks", [SyncHooks, AsyncHooks], ids=["sync", "async"])
async def test_hooks_may_be_plain_functions_or_coroutines(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    hooks: type[SyncHooks | AsyncHooks],
) -> None:
    """open, message, ping and close run in order whether written as def or async def."""
    handler = hooks()
    served = await serve(handler)
    async with client_session.ws_connect(served.url, autoping=False) as ws:
        await ws.send_str("m")
        assert await ws.receive_str() == "m"
        await ws.ping(b"p")
        await ws.close(code=4000, message=b"done")
    calls = [await handler.calls.get() for _ in range(4)]
    assert calls == [
        ("open",),
        ("message", "m"),
        ("ping", b"p"),
        ("close", 4000, "done"),
    ]


async def test_send_from_open_arrives_first(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A message sent from the open hook reaches the client before any reply."""
    served = await serve(Greeter(), upgrade_with_data(Session("first")))
    async with client_session.ws_connect(served.url) as ws:
        await ws.send_str("x")
        assert await ws.receive_str() == "hello first"
        assert await ws.receive_str() == "first:1"


class Gated(WebSocketHandler[Any]):
    """An async message hook that waits on a gate for the first message."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.log: list[str] = []
        self.done = asyncio.Event()

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        assert isinstance(message, str)
        self.log.append(f"start {message}")
        if message == "1":
            await self.gate.wait()
        self.log.append(f"end {message}")
        if message == "3":
            self.done.set()


async def test_async_message_hook_is_awaited_before_the_next_message(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """Messages of one socket are dispatched in order, each async hook finishing first."""
    handler = Gated()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    for text in (b"1", b"2", b"3"):
        await raw.send(OP_TEXT, text)
    # The pong proves the server has parsed messages 2 and 3 while 1 is still running.
    await raw.send(OP_PING, b"sync")
    assert await raw.recv() == (True, OP_PONG, b"sync")
    assert handler.log == ["start 1"]
    handler.gate.set()
    await handler.done.wait()
    assert handler.log == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]


async def test_blocked_socket_does_not_block_others(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """While one socket's async message hook waits, another socket's messages run."""
    handler = Gated()
    served = await serve(handler)
    blocked = await connect_raw(served.port)
    other = await connect_raw(served.port)
    await blocked.send(OP_TEXT, b"1")
    await other.send(OP_TEXT, b"3")
    await handler.done.wait()
    assert handler.log == ["start 1", "start 3", "end 3"]
    handler.gate.set()


async def test_server_and_handler_are_generic_in_data(
    aiohttp_server: Any, client_session: aiohttp.ClientSession
) -> None:
    """Server[Session] with a WebSocketHandler[Session] hands Session objects to hooks."""
    server: Server[Session] = Server(Greeter())

    async def fetch(request: web.Request, srv: Server[Session]) -> None:
        assert srv.upgrade(request, data=Session(user_id="typed"))

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    http = await aiohttp_server(app)
    async with client_session.ws_connect(http.make_url("/ws")) as ws:
        assert await ws.receive_str() == "hello typed"
