"""The "add aiohttp-upgrade to an existing app" example keeps the old app working."""

from __future__ import annotations

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient
from websockets.asyncio.client import connect

from aiohttp_upgrade import SERVER_KEY, Server
from demo.existing_app import init_api, init_app

from .demo_support import Client


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(init_app([]))


async def test_existing_routes_still_answer(client: Client) -> None:
    """The old page and sub-application route still work, middleware included."""
    async with client.get("/") as page:  # released: no connection left to the GC
        assert page.status == 200
    api = await client.get("/api/id", headers={"X-Request-Id": "abc"})
    assert await api.json() == {"request_id": "abc"}
    assert api.headers["X-Request-Id"] == "abc"


async def test_websocket_echoes_through_the_middleware(client: Client) -> None:
    """The new /ws route upgrades behind the middleware and echoes text."""
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("ping?")
        assert await ws.receive_str(timeout=10) == "ping?"


async def test_upgrade_response_carries_request_id(client: Client) -> None:
    """The 101 response carries the middleware's request id via upgrade(headers=)."""
    url = str(client.make_url("/ws")).replace("http://", "ws://", 1)
    async with connect(url, additional_headers={"X-Request-Id": "r-1"}) as ws:
        assert ws.response is not None
        assert ws.response.headers["X-Request-Id"] == "r-1"


async def test_sub_application_publishes_to_sockets(client: Client) -> None:
    """A POST to the sub-application reaches every open socket through the server."""
    async with client.ws_connect("/ws") as ws:
        server = client.app[SERVER_KEY]
        assert isinstance(server, Server)
        # The open hook (which subscribes) runs before any message is handled,
        # so one echo proves the subscription is in place.
        await ws.send_str("sync")
        assert await ws.receive_str(timeout=10) == "sync"
        response = await client.post("/api/announce", json={"text": "deploy at 5"})
        assert await response.json() == {"listeners": 1}
        assert await ws.receive_str(timeout=10) == "deploy at 5"


async def test_announce_refuses_form_posts(client: Client) -> None:
    """Announcements must be JSON, so a cross-site HTML form cannot send one."""
    response = await client.post("/api/announce", data={"text": "spam"})
    assert response.status == 415


async def test_websocket_from_foreign_origin_is_403(client: Client) -> None:
    """Only the app's own pages may open the socket."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    assert info.value.status == 403


async def test_sub_application_runs_alone(aiohttp_client: AiohttpClient) -> None:
    """init_api serves the sub-application alone; announcing there says 503."""
    client = await aiohttp_client(init_api([]))
    api = await client.get("/api/id")
    announce = await client.post("/api/announce", json={"text": "x"})
    assert api.status == 200
    assert announce.status == 503
