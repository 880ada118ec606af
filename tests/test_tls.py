"""``wss://`` terminated by aiohttp itself (an ``ssl_context`` on the site).

The take-over hands aiohttp's TLS transport (asyncio's or uvloop's SSL transport,
not a socket) to the connection, which then reads, writes, pauses and closes it
directly. Clients are raw TLS sockets, aiohttp's client and ``websockets``, all
verifying a self-signed certificate made for the run. ``make test-uvloop`` runs
these tests on uvloop as well. Every socket that opens here must get exactly one
``close`` hook call: the ``ledger`` fixture checks it once the server has shut
down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets.asyncio.client
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import ReadyState, Server, ServerWebSocket
from aiohttp_upgrade._options import DEFAULT_CLOSE_TIMEOUT

from .conftest import Event, Recorder, Served, upgrade_with_data
from .flow_support import CHUNK, numbered, sequence_number
from .tls_support import (
    CLIENT_KINDS,
    MAKERS,
    Certificate,
    available_makers,
    connect_tls,
    make_certificate,
    open_tls_client,
)
from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    client_frame,
    close_payload,
    parse_close,
    read_frame,
    request_bytes,
)

MESSAGES = ["héllo ✓", b"\x00\xffbinary"]
MESSAGE_IDS = ["text", "binary"]
FLOOD = 200  # messages of CHUNK (64 KiB) bytes: 12.5 MiB, more than the kernel takes


class Ledger(Recorder):
    """Records every hook, echoes messages and counts close hook calls per socket."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.close_calls: Counter[ServerWebSocket[Any]] = Counter()

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        super().message(ws, message)
        ws.send(message)

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.close_calls[ws] += 1
        super().close(ws, code, reason)

    def assert_each_socket_closed_once(self) -> None:
        calls = {ws: self.close_calls[ws] for ws in self.sockets}
        assert all(count == 1 for count in calls.values()), calls
        assert set(self.close_calls) <= set(self.sockets)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def client_context(certificate: Certificate) -> ssl.SSLContext:
    return certificate.client_context()


@pytest.fixture
def ledger() -> Iterator[list[Ledger]]:
    """The handlers of the test's servers; torn down after the servers, it checks
    that every socket they opened got exactly one close hook call."""
    handlers: list[Ledger] = []
    yield handlers
    for handler in handlers:
        handler.assert_each_socket_closed_once()


TLSServe = Callable[..., Awaitable[Served]]


@pytest.fixture
async def tls_serve(
    ledger: list[Ledger],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    certificate: Certificate,
) -> AsyncIterator[TLSServe]:
    """Start ``Server(handler)`` at /ws behind aiohttp's TLS on a loopback port."""

    async def start(handler: Ledger, cert: Certificate = certificate) -> Served:
        ledger.append(handler)
        server: Server[Any] = Server(handler)
        app = web.Application()
        server.setup(app)
        app.router.add_get("/ws", server.handler(upgrade_with_data()))
        http = await aiohttp_server(app, ssl=cert.server_context())
        url = str(http.make_url("/ws")).replace("https://", "wss://", 1)
        return Served(server, http, url)

    yield start


def collapse(codes: list[int]) -> list[int]:
    """Drop consecutive repeats: [5, 5, -1, -1] -> [5, -1]."""
    return [c for i, c in enumerate(codes) if i == 0 or codes[i - 1] != c]


async def test_tests_run_on_the_selected_event_loop(
    request: pytest.FixtureRequest,
) -> None:
    """The tests run on uvloop when ``--loop=uvloop`` selects it, else on asyncio's loop."""
    module = type(asyncio.get_running_loop()).__module__
    if request.config.getoption("loop") == "uvloop":
        assert module.startswith("uvloop")
    else:
        assert module.startswith("asyncio")


@pytest.mark.parametrize("maker", MAKERS, ids=MAKERS)
async def test_each_certificate_maker_gives_a_certificate_clients_trust(
    tls_serve: TLSServe, client_context: ssl.SSLContext, tmp_path: Path, maker: str
) -> None:
    """A certificate from either maker (cryptography, openssl) serves a verified wss:// echo."""
    if maker not in available_makers():
        pytest.skip(f"{maker} is not available")
    cert = make_certificate(tmp_path, maker)
    served = await tls_serve(Ledger(), cert)
    async with open_tls_client("websockets", served.url, cert.client_context()) as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"


async def test_an_untrusted_certificate_is_refused(
    tls_serve: TLSServe, tmp_path: Path
) -> None:
    """A client that does not trust the server's certificate fails the TLS handshake (TLS is really on)."""
    served = await tls_serve(Ledger())
    stranger = make_certificate(tmp_path).client_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        async with websockets.asyncio.client.connect(served.url, ssl=stranger):
            pass


@pytest.mark.parametrize("message", MESSAGES, ids=MESSAGE_IDS)
@pytest.mark.parametrize("kind", CLIENT_KINDS, ids=CLIENT_KINDS)
async def test_echo_over_tls(
    tls_serve: TLSServe, client_context: ssl.SSLContext, kind: str, message: Any
) -> None:
    """After a wss:// handshake a message comes back with its content and frame type."""
    handler = Ledger()
    served = await tls_serve(handler)
    async with open_tls_client(kind, served.url, client_context) as client:
        await client.send(message)
        assert await client.receive() == message
    assert (await handler.next("message")).args == (message,)


async def test_frames_sent_with_the_handshake_are_kept_over_tls(
    tls_serve: TLSServe, client_context: ssl.SSLContext
) -> None:
    """Frames in the same TLS write as the handshake request reach the socket in order."""
    served = await tls_serve(Ledger())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", served.port, ssl=client_context
    )
    frames = client_frame(OP_TEXT, b"one") + client_frame(OP_BINARY, b"two")
    writer.write(request_bytes() + frames)
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        assert await read_frame(reader) == (True, OP_TEXT, b"one")
        assert await read_frame(reader) == (True, OP_BINARY, b"two")
    writer.close()
    await writer.wait_closed()


async def test_a_message_of_many_tls_records_arrives_whole(
    tls_serve: TLSServe, client_context: ssl.SSLContext
) -> None:
    """A 1 MiB message, many TLS records decrypted into the server's read buffer per read, comes back unchanged."""
    served = await tls_serve(Ledger(max_payload_length=2 << 20))
    raw = await connect_tls(served.port, client_context)
    payload = bytes(i * 7 % 251 for i in range(1 << 20))
    await raw.send(OP_BINARY, payload)
    async with asyncio.timeout(10):
        assert await raw.recv() == (True, OP_BINARY, payload)
    await raw.close()


@pytest.mark.parametrize("kind", CLIENT_KINDS, ids=CLIENT_KINDS)
async def test_backpressure_over_tls(
    tls_serve: TLSServe, client_context: ssl.SSLContext, kind: str
) -> None:
    """200 x 64 KiB to a client not reading: codes go from the length to -1, then all arrive in order and one drain follows."""
    handler = Ledger()
    served = await tls_serve(handler)
    async with open_tls_client(kind, served.url, client_context) as client:
        ws = (await handler.next("open")).ws
        # One loop turn: the client cannot read while these are sent.
        codes = [ws.send(numbered(seq)) for seq in range(FLOOD)]
        assert collapse(codes) == [CHUNK, -1]
        assert ws.get_buffered_amount() > 0
        received = []
        for _ in range(FLOOD):
            message = await client.receive()
            assert isinstance(message, bytes)
            received.append(sequence_number(message))
        assert received == list(range(FLOOD))
        await handler.next("drain")
        # A round trip: a second drain would be recorded before this message.
        await client.send("done")
        later: list[Event] = []
        while (event := await handler.events.get()).hook != "message":
            later.append(event)
        assert [e.hook for e in later] == []
        assert await client.receive() == "done"


@pytest.mark.parametrize("kind", CLIENT_KINDS, ids=CLIENT_KINDS)
async def test_server_close_over_tls(
    tls_serve: TLSServe, client_context: ssl.SSLContext, kind: str
) -> None:
    """ws.close(4000) reaches the client as a Close with 4000 and the close hook with 4000."""
    handler = Ledger()
    served = await tls_serve(handler)
    async with open_tls_client(kind, served.url, client_context) as client:
        ws = (await handler.next("open")).ws
        ws.close(4000, "bye")
        assert (await handler.next("close")).args == (4000, "bye")
        assert await client.receive_close() == 4000


async def test_aiohttp_client_close_code_is_the_servers_over_tls(
    tls_serve: TLSServe, client_context: ssl.SSLContext
) -> None:
    """After ws.close(4000) an aiohttp client's close_code is 4000, as it is over ws://."""
    handler = Ledger()
    served = await tls_serve(handler)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(served.url, ssl=client_context) as client,
    ):
        ws = (await handler.next("open")).ws
        ws.close(4000, "bye")
        msg = await client.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4000)
        assert client.exception() is None
        assert client.close_code == 4000


@pytest.mark.parametrize("kind", CLIENT_KINDS, ids=CLIENT_KINDS)
async def test_client_close_over_tls(
    tls_serve: TLSServe, client_context: ssl.SSLContext, kind: str
) -> None:
    """A client Close with 1000 is echoed to the client and reaches the close hook as 1000."""
    handler = Ledger()
    served = await tls_serve(handler)
    async with open_tls_client(kind, served.url, client_context) as client:
        await handler.next("open")
        assert await client.close() == 1000
        assert (await handler.next("close")).args == (1000, "")


@pytest.mark.parametrize("kind", CLIENT_KINDS, ids=CLIENT_KINDS)
async def test_app_shutdown_closes_tls_sockets_with_1001(
    tls_serve: TLSServe, client_context: ssl.SSLContext, kind: str
) -> None:
    """Shutting the app down sends 1001 to a TLS client and gives the close hook 1001."""
    handler = Ledger()
    served = await tls_serve(handler)
    async with open_tls_client(kind, served.url, client_context) as client:
        await handler.next("open")
        await served.http.close()
        assert await client.receive_close() == 1001
        assert (await handler.next("close")).args[0] == 1001


async def test_peer_vanishing_mid_frame_over_tls(
    tls_serve: TLSServe, client_context: ssl.SSLContext
) -> None:
    """A TLS client aborted after half a frame gives one close hook call with 1006; the server keeps serving."""
    handler = Ledger()
    served = await tls_serve(handler)
    raw = await connect_tls(served.port, client_context)
    ws = (await handler.next("open")).ws
    half = client_frame(OP_BINARY, bytes(1000))[:500]
    raw.writer.write(client_frame(OP_PING, b"sync") + half)
    # The pong answers the ping read with the half frame: the server holds it.
    async with asyncio.timeout(10):
        assert await raw.recv() == (True, OP_PONG, b"sync")
    raw.writer.transport.abort()
    assert (await handler.next("close")).args == (1006, "")
    assert ws.ready_state is ReadyState.CLOSED
    async with open_tls_client("aiohttp", served.url, client_context) as other:
        await other.send("still here")
        assert await other.receive() == "still here"
    assert handler.close_calls[ws] == 1


async def test_close_timeout_aborts_a_tls_client_that_never_closes(
    tls_serve: TLSServe, client_context: ssl.SSLContext
) -> None:
    """A TLS client that never answers ws.close() is aborted after close_timeout,
    well before the 5 s default would end it."""
    handler = Ledger(close_timeout=0.05)
    served = await tls_serve(handler)
    raw = await connect_tls(served.port, client_context)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    async with asyncio.timeout(DEFAULT_CLOSE_TIMEOUT / 2):
        _, opcode, _ = await raw.recv()
        assert opcode == OP_CLOSE
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            assert await raw.reader.read() == b""  # aborted: EOF or a reset
    raw.writer.close()


async def test_server_close_over_tls_waits_for_the_clients_close(
    tls_serve: TLSServe,
    client_context: ssl.SSLContext,
) -> None:
    """After ws.close() over TLS (no half-close) the server skips the client's frames
    and closes TCP once the client's Close arrives; no hook sees those frames."""
    # Far beyond the test's own timeout: only the client's Close can end it.
    handler = Ledger(close_timeout=600.0)
    served = await tls_serve(handler)
    raw = await connect_tls(served.port, client_context)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    async with asyncio.timeout(10):
        _, opcode, payload = await raw.recv()
    assert (opcode, parse_close(payload)) == (OP_CLOSE, (4000, b"bye"))
    # Still open: these reach a parser that only waits for the Close.
    raw.writer.write(
        client_frame(OP_TEXT, b"late")
        + client_frame(OP_PING, b"late")
        + client_frame(OP_CLOSE, close_payload(4000))
    )
    async with asyncio.timeout(10):
        assert await raw.reader.read() == b""  # the server closed the connection
    raw.writer.close()
    after_open = [handler.events.get_nowait() for _ in range(handler.events.qsize())]
    assert [(event.hook, event.args) for event in after_open] == [
        ("close", (4000, "bye"))
    ]


async def test_protocol_error_over_tls_closes_without_waiting(
    tls_serve: TLSServe, client_context: ssl.SSLContext
) -> None:
    """After a protocol error over TLS the server sends its Close (1002) and closes
    the connection at once, not after the close timeout, though the client answers
    with its own Close."""
    # Far beyond the test's own timeout: only closing at once can pass.
    handler = Ledger(close_timeout=600.0)
    served = await tls_serve(handler)
    raw = await connect_tls(served.port, client_context)
    await handler.next("open")
    raw.writer.write(client_frame(OP_TEXT, b"unmasked", mask=False))
    async with asyncio.timeout(10):
        _, opcode, payload = await raw.recv()
        assert (opcode, parse_close(payload)[0]) == (OP_CLOSE, 1002)
        raw.writer.write(client_frame(OP_CLOSE, close_payload(1002)))
        assert await raw.reader.read() == b""  # the server closed the connection
    assert (await handler.next("close")).args[0] == 1002
    raw.writer.close()
