"""The README's quick start, end to end."""

from __future__ import annotations

import aiohttp

from .conftest import Echo, Recorder, ServeFactory


async def test_echo_round_trip(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A text message sent by aiohttp's client comes back as the same text."""
    served = await serve(Echo())
    async with client_session.ws_connect(served.url) as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "hello"


async def test_recorder_sees_open_message_close(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """Hooks run in order open, message, close with the client's close code."""
    handler = Recorder()
    served = await serve(handler)
    async with client_session.ws_connect(served.url) as ws:
        await handler.next("open")
        await ws.send_bytes(b"\x01\x02")
        event = await handler.next("message")
        assert event.args == (b"\x01\x02",)
        await ws.close(code=4000, message=b"done")
    event = await handler.next("close")
    assert event.args == (4000, "done")
