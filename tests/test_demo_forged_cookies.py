"""Forged session cookies, sent as raw bytes to a real server: every route reads
them as signed out, never as a server error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from demo.auth import COOKIE_NAME

from . import wire
from .demo_support import START, TTL, make_config, start_chat

SESSION_ID = "A" * 22
EXPIRY = str(int(START) + TTL)

# Cookie values as the bytes that go on the wire: the session id and expiry are
# well formed and unexpired, so only the signature (or the shape) is wrong.
FORGED = {
    "utf8-signature": f"{SESSION_ID}.{EXPIRY}.{'é' * 43}".encode(),
    "emoji-signature": f"{SESSION_ID}.{EXPIRY}.".encode() + "\U0001f600".encode() * 11,
    "latin1-byte-signature": f"{SESSION_ID}.{EXPIRY}.".encode() + b"\xe9" * 43,
    "arabic-digits-expiry": f"{SESSION_ID}.\u0661\u0662\u0663.".encode() + b"x" * 43,
    "no-dot": b"x" * 60,
    "one-dot": f"{SESSION_ID}.{EXPIRY}".encode(),
    "empty": b"",
    "very-long": f"{SESSION_ID}.{EXPIRY}.".encode() + b"A" * 6000,
    "empty-parts": b"..",
}

# What each route answers a browser without a valid session.
SIGNED_OUT = {
    "GET /": 200,  # the sign-in page
    "GET /api/me": 401,
    "GET /ws": 401,
    "POST /sign-out": 303,
    "POST /sign-in": 303,  # signed in afresh, as from a browser without a cookie
}
# The form each POST route gets.
BODIES = {"/sign-in": b"name=ada"}


async def send_raw(port: int, route: str, cookie: bytes) -> wire.HTTPResponse:
    """Send ``route`` with ``Cookie: demo_session=<cookie>`` as raw bytes."""
    method, path = route.split(" ")
    body = BODIES.get(path, b"")
    headers = {}
    if method == "POST":
        headers["Content-Length"] = str(len(body))
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    head = wire.request_bytes(
        path, headers, method=method, websocket=path == "/ws"
    ).removesuffix(b"\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            head
            + b"Cookie: "
            + COOKIE_NAME.encode()
            + b"="
            + cookie
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        return await wire.read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("route", list(SIGNED_OUT), ids=list(SIGNED_OUT))
@pytest.mark.parametrize("cookie", list(FORGED.values()), ids=list(FORGED))
async def test_forged_cookie_reads_as_signed_out(
    aiohttp_client: AiohttpClient, tmp_path: Path, route: str, cookie: bytes
) -> None:
    """A forged session cookie gets the signed-out answer of the route, not a 500."""
    client = await start_chat(aiohttp_client, make_config(tmp_path))
    assert client.port is not None
    response = await send_raw(client.port, route, cookie)
    assert response.status == SIGNED_OUT[route], response.body
    if route == "GET /":
        assert b'action="/sign-in"' in response.body
