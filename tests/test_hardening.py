"""Handshake hardening: one Origin decision, HTTP/1.0, duplicated headers, no data in logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

from .conftest import Recorder, ServeFactory, upgrade_with_data
from .wire import KEY, OP_TEXT, connect, read_response, request_bytes

FOREIGN = "https://evil.example"


async def exchange(port: int, head: bytes) -> int:
    """Send a raw request head; return the response status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return (await read_response(reader)).status
    finally:
        writer.close()
        await writer.wait_closed()


async def status_of(port: int, headers: list[tuple[str, str]]) -> int:
    """Send a handshake with the standard headers and then ``headers``, each on a line
    of its own (a name may repeat); return the response status."""
    replaced = {name.lower() for name, _ in headers}
    base = [(n, v) for n, v in STANDARD if n.lower() not in replaced]
    lines = ["GET /ws HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (*base, *headers)]
    return await exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode())


STANDARD = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


ORIGIN_CASES: dict[str, list[tuple[str, str]]] = {
    "h2c-then-websocket": [
        ("Upgrade", "h2c"),
        ("Upgrade", "websocket"),
        ("Origin", FOREIGN),
    ],
    "websocket-then-h2c": [
        ("Upgrade", "websocket"),
        ("Upgrade", "h2c"),
        ("Origin", FOREIGN),
    ],
    "listed-upgrade": [("Upgrade", "h2c, websocket"), ("Origin", FOREIGN)],
    "keepalive-then-upgrade-connection": [
        ("Connection", "keep-alive"),
        ("Connection", "Upgrade"),
        ("Origin", FOREIGN),
    ],
    "own-then-foreign-origin": [
        ("Origin", "http://127.0.0.1"),
        ("Origin", FOREIGN),
    ],
    "foreign-then-own-origin": [
        ("Origin", FOREIGN),
        ("Origin", "http://127.0.0.1"),
    ],
    "origin-list": [("Origin", f"http://127.0.0.1 {FOREIGN}")],
}


@pytest.mark.parametrize("headers", list(ORIGIN_CASES.values()), ids=list(ORIGIN_CASES))
async def test_foreign_origin_never_upgrades(
    serve: ServeFactory, headers: list[tuple[str, str]]
) -> None:
    """However Upgrade, Connection and Origin lines are split or repeated, a foreign Origin gets 403."""
    handler = Recorder()
    served = await serve(handler, allowed_origins=())
    assert await status_of(served.port, headers) == 403
    assert handler.sockets == []


# Upgrade split over two lines is refused: aiohttp reads only the first line, and
# would parse the frames behind such a head as HTTP (tests/test_upgrade.py).
@pytest.mark.parametrize(
    "headers",
    [
        [("Connection", "keep-alive"), ("Connection", "Upgrade")],
        [("Origin", "http://127.0.0.1")],
    ],
    ids=["split-connection", "own-origin"],
)
async def test_split_headers_with_own_origin_upgrade(
    serve: ServeFactory, headers: list[tuple[str, str]]
) -> None:
    """Connection split over several lines is one list (RFC 9110 5.3): the handshake is accepted."""
    handler = Recorder()
    served = await serve(handler, allowed_origins=())
    raw = await connect(served.port, headers=headers)
    await handler.next("open")
    await raw.close()


async def test_refused_origin_never_reaches_fetch(serve: ServeFactory) -> None:
    """A handshake from a foreign Origin, however its Upgrade lines are split, gets 403 before fetch runs."""
    calls: list[str] = []

    def fetch(request: web.Request, server: Server[Any]) -> web.StreamResponse | None:
        calls.append(request.path)
        if server.upgrade(request):
            return None
        return web.Response(status=400, text="Upgrade failed")

    served = await serve(Recorder(), fetch, allowed_origins=())
    for upgrade in ("websocket", "h2c, websocket"):
        headers = [("Upgrade", "h2c"), ("Upgrade", upgrade), ("Origin", FOREIGN)]
        assert await status_of(served.port, headers) == 403
    assert calls == []


async def test_duplicated_key_is_refused(serve: ServeFactory) -> None:
    """Two Sec-WebSocket-Key lines (RFC 6455 11.3.1: at most one) are not a handshake."""
    handler = Recorder()
    served = await serve(handler)
    headers = [("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Key", KEY)]
    assert await status_of(served.port, headers) == 400
    assert handler.sockets == []


async def test_http_10_handshake_is_refused(serve: ServeFactory) -> None:
    """An HTTP/1.0 handshake is not upgraded (RFC 6455 4.1 needs HTTP/1.1 or later)."""
    handler = Recorder()
    served = await serve(handler)
    head = request_bytes("/ws").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    assert await exchange(served.port, head) == 400
    assert handler.sockets == []


class Failing(WebSocketHandler[str]):
    """Raises from ``message``; remembers ``repr(ws)`` and signals the close."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()
        self.reprs: list[str] = []

    def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        self.reprs.append(repr(ws))
        raise RuntimeError("boom")

    def close(self, ws: ServerWebSocket[str], code: int, reason: str) -> None:
        self.closed.set()


async def test_hook_failure_log_has_no_data_secret(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither repr(ws) nor the log of a hook failure contains the socket's data."""
    handler = Failing()
    served = await serve(handler, upgrade_with_data("session-token-s3cr3t"))
    with caplog.at_level(logging.DEBUG, logger="aiohttp_upgrade"):
        raw = await connect(served.port)
        await raw.send(OP_TEXT, b"hi")
        await handler.closed.wait()
        await raw.close()
    assert "boom" in caplog.text
    assert "s3cr3t" not in caplog.text
    assert handler.reprs and "s3cr3t" not in handler.reprs[0]
    assert "127.0.0.1" in handler.reprs[0]
