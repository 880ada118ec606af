"""The ``RouteTableDef`` recipe of docs/existing-app.rst (``examples/route_table.py``):
an app factory that runs more than once gives apps that all work."""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .examples_support import load_example

EXISTING_APP_RST = Path(__file__).resolve().parent.parent / "docs" / "existing-app.rst"

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
def route_table(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``examples/route_table.py``, imported once, as an app's module is."""
    return load_example("route_table", monkeypatch)


async def test_two_apps_from_the_factory_both_serve_their_lobby(
    route_table: types.ModuleType,
    aiohttp_server: ServerFactory,
    client_session: aiohttp.ClientSession,
) -> None:
    """Two apps made by the same factory each upgrade on /ws and relay their lobby."""
    for _ in range(2):
        http = await aiohttp_server(route_table.create_app())
        url = http.make_url("/ws")
        async with (
            client_session.ws_connect(url.with_query(user="ada")) as ada,
            client_session.ws_connect(url.with_query(user="bob")) as bob,
        ):
            assert await ada.receive_str(timeout=10) == "welcome ada"
            assert await bob.receive_str(timeout=10) == "welcome bob"
            await ada.send_str("hi")
            assert await bob.receive_str(timeout=10) == "ada: hi"


async def test_each_app_announces_to_its_own_sockets_only(
    route_table: types.ModuleType,
    aiohttp_server: ServerFactory,
    client_session: aiohttp.ClientSession,
) -> None:
    """An HTTP route of one app reaches that app's sockets, not the other app's."""
    first = await aiohttp_server(route_table.create_app())
    second = await aiohttp_server(route_table.create_app())
    async with (
        client_session.ws_connect(first.make_url("/ws?user=ada")) as ada,
        client_session.ws_connect(second.make_url("/ws?user=bob")) as bob,
    ):
        assert await ada.receive_str(timeout=10) == "welcome ada"
        assert await bob.receive_str(timeout=10) == "welcome bob"
        async with client_session.post(second.make_url("/announce"), data="two"):
            pass
        async with client_session.post(first.make_url("/announce"), data="one"):
            pass
        # Had "two" reached ada, it would have been queued before "one".
        assert await ada.receive_str(timeout=10) == "announce: one"
        assert await bob.receive_str(timeout=10) == "announce: two"


def test_existing_app_page_shows_the_recipe() -> None:
    """docs/existing-app.rst includes examples/route_table.py."""
    text = EXISTING_APP_RST.read_text(encoding="utf-8")
    assert ".. literalinclude:: ../examples/route_table.py" in text
