"""Helpers for the demo's tests: a fake clock, app start-up, JSON frame waiting and
the headless Chromium of the browser tests."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from demo.auth import COOKIE_NAME
from demo.chat import create_app
from demo.config import Config
from demo.limits import Limits

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = [
    "BROWSER_MARKS",
    "CHROMIUM",
    "SECRET",
    "START",
    "TTL",
    "Client",
    "FakeClock",
    "another_client",
    "chromium",
    "connect",
    "join",
    "make_config",
    "next_frame",
    "session_cookie",
    "sign_in",
    "start_chat",
    "wait_for",
]

SECRET = b"test-secret-test-secret-32-bytes"
START = 1_700_000_000.0
TTL = 3600
FRAME_TIMEOUT = 10.0

Client = TestClient[Any, Any]

CHROMIUM = Path("/usr/bin/chromium")
# The marks of a test module driving Debian's Chromium through Playwright.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs Playwright for Python (pip install playwright)",
    ),
]


@dataclass
class FakeClock:
    """A clock the test moves by hand, so sessions expire without waiting."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(
    tmp_path: Path,
    clock: Callable[[], float] | None = None,
    allowed_origins: tuple[str, ...] = (),
    limits: Limits | None = None,
    session_ttl: int = TTL,
) -> Config:
    """A config with its database in ``tmp_path`` and a fixed secret; a
    :class:`FakeClock` unless ``clock`` is given."""
    return Config(
        data_dir=tmp_path / "data",
        secret=SECRET,
        allowed_origins=allowed_origins,
        session_ttl=session_ttl,
        clock=clock or FakeClock(),
        limits=limits or Limits(),
    )


async def start_chat(aiohttp_client: AiohttpClient, config: Config) -> Client:
    """Start a chat app on ``config`` on a loopback port; return a client of it."""
    return await aiohttp_client(create_app(config))


async def another_client(aiohttp_client: AiohttpClient, client: Client) -> Client:
    """A second client, with its own cookie jar, of the server ``client`` uses."""
    return await aiohttp_client(client.server)


async def sign_in(client: Client, name: str) -> None:
    """Sign ``client`` in as ``name``; its cookie jar keeps the session."""
    response = await client.post("/sign-in", data={"name": name}, allow_redirects=False)
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/", response.headers["Location"]


def session_cookie(client: Client) -> str:
    """The session cookie ``client`` holds."""
    cookies = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    return cookies[COOKIE_NAME].value


async def connect(client: Client, **headers: str) -> ClientWebSocketResponse:
    """Open the chat WebSocket and consume the server's ``hello``."""
    ws = await client.ws_connect("/ws", headers=headers)
    hello = await next_frame(ws)
    assert hello["type"] == "hello", hello
    return ws


async def next_frame(ws: ClientWebSocketResponse) -> dict[str, Any]:
    """The next frame from the server, decoded; fails on anything but text."""
    async with asyncio.timeout(FRAME_TIMEOUT):
        message = await ws.receive()
    assert message.type is WSMsgType.TEXT, message
    frame = json.loads(message.data)
    assert isinstance(frame, dict)
    return frame


async def wait_for(ws: ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """Skip frames until one of type ``kind`` arrives, and return it."""
    while True:
        frame = await next_frame(ws)
        if frame["type"] == kind:
            return frame


async def join(ws: ClientWebSocketResponse, room: str) -> dict[str, Any]:
    """Join ``room`` and return the server's ``joined`` answer."""
    await ws.send_json({"type": "join", "room": room})
    return await wait_for(ws, "joined")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium (Debian's, see :data:`CHROMIUM`) until the block ends."""
    from playwright.async_api import async_playwright

    from demo.screenshot import launch_chromium

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            yield browser
        finally:
            await browser.close()
