"""The testing example of docs/existing-app.rst (included from this file): pytest-aiohttp's
``aiohttp_client`` against an app with aiohttp-upgrade in it."""

from __future__ import annotations

from pytest_aiohttp import AiohttpClient

from aiohttp_upgrade import SERVER_KEY
from demo.existing_app import ANNOUNCEMENTS, init_app


async def test_socket_echoes(aiohttp_client: AiohttpClient) -> None:
    """A client of the app's test server upgrades /ws and gets its message back."""
    client = await aiohttp_client(init_app([]))
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=10) == "hello"


async def test_http_route_publishes_to_sockets(aiohttp_client: AiohttpClient) -> None:
    """A POST to the HTTP API reaches the socket through the server's topic."""
    client = await aiohttp_client(init_app([]))
    server = client.app[SERVER_KEY]
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("ready?")  # the echo comes after open() has subscribed
        assert await ws.receive_str(timeout=10) == "ready?"
        assert server.subscriber_count(ANNOUNCEMENTS) == 1
        response = await client.post("/api/announce", json={"text": "deploy at 5"})
        assert await response.json() == {"listeners": 1}
        assert await ws.receive_str(timeout=10) == "deploy at 5"
    assert server.pending_websockets == 0  # closed before it answered our Close
