"""docs/bun.rst ("Coming from Bun") names what a port looks for, and what it says
about the aiohttp side holds."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aiohttp_upgrade import Server

from .conftest import Echo, upgrade_with_data

ROOT = Path(__file__).resolve().parent.parent
BUN_RST = ROOT / "docs" / "bun.rst"

BUN_NAMES = [
    "server.stop(true)",
    "req.cookies",
    "searchParams",
    "String(message)",
    "binaryType",
    "requestIP",
    "server.timeout",
    "server.port",
    "server.url",
]
"""Bun names a port from Bun looks up: request-side idioms and the names with no
equivalent here."""


def _flat(path: Path) -> str:
    """The file's text with every run of whitespace made one space."""
    return " ".join(path.read_text(encoding="utf-8").split())


@pytest.mark.parametrize("name", BUN_NAMES, ids=BUN_NAMES)
def test_bun_page_says_what_to_use_for(name: str) -> None:
    """The Bun page mentions each Bun name a port looks for."""
    assert name in _flat(BUN_RST)


def test_bun_page_maps_stop_to_stop_listening() -> None:
    """Bun's ``stop()`` (stop listening, sockets stay) maps to ``site.stop()``, and
    ``stop(true)`` (close them too) to ``runner.cleanup()``."""
    text = _flat(BUN_RST)
    section = text[text.index("Counting sockets and shutting down") :]
    section = section[: section.index("Deliberate differences")]
    assert "await site.stop()" in section
    assert "await runner.cleanup()" in section


DOC_FILES = [
    ROOT / "README.rst",
    *sorted((ROOT / "docs").glob("*.rst")),
    *sorted((ROOT / "aiohttp_upgrade").glob("*.py")),
]


@pytest.mark.parametrize(
    "path", DOC_FILES, ids=[str(path.relative_to(ROOT)) for path in DOC_FILES]
)
def test_reset_idle_timeout_on_send_is_credited_to_uwebsockets_cpp(path: Path) -> None:
    """No page calls ``resetIdleTimeoutOnSend`` a uWebSockets.js option: it is the
    C++ library's (default false), and Bun always resets the timer on a send."""
    found = re.search(r"uWebSockets\.js[^.;]{0,40}resetIdleTimeoutOnSend", _flat(path))
    assert found is None, found.group()


@pytest.fixture
async def site_and_client() -> AsyncIterator[
    tuple[web.TCPSite, Server[Any], aiohttp.ClientWebSocketResponse, str]
]:
    """An echo app served by an AppRunner and TCPSite we control, one client open."""
    server: Server[Any] = Server(Echo())
    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{site.port}/ws"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url) as ws,
        ):
            yield site, server, ws, url
    finally:
        await runner.cleanup()


async def test_site_stop_stops_listening_and_leaves_sockets_open(
    site_and_client: tuple[
        web.TCPSite, Server[Any], aiohttp.ClientWebSocketResponse, str
    ],
) -> None:
    """After ``await site.stop()`` (Bun's ``stop()``) a new connection is refused
    while an open socket still echoes."""
    site, server, ws, url = site_and_client
    await site.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.ws_connect(url)
    await ws.send_str("still here")
    assert await ws.receive_str(timeout=10) == "still here"
    assert server.pending_websockets == 1
