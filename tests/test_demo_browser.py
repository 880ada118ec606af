"""The chat demo end to end in headless Chromium driven by Playwright.

Uses Debian's ``chromium`` through ``executable_path`` (Playwright downloads no
browser). Skipped only when that binary or the Playwright package is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from demo.chat import create_app

from .demo_support import BROWSER_MARKS, chromium, make_config

pytestmark = BROWSER_MARKS

if TYPE_CHECKING or importlib.util.find_spec("playwright") is not None:
    from playwright.async_api import Browser

    from demo.screenshot import say, sign_in

# What a signed-out page sees when it tries the WebSocket itself.
TRY_WEBSOCKET = """
() => new Promise((resolve) => {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => { ws.close(); resolve("open"); };
  ws.onclose = (event) => resolve(`closed ${event.code}`);
})
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def chat(aiohttp_server: AiohttpServer, tmp_path: Path) -> TestServer:
    return await aiohttp_server(create_app(make_config(tmp_path)))


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def test_message_from_one_user_appears_for_the_other(
    browser: Browser, chat: TestServer
) -> None:
    """A message typed by one signed-in browser shows up in another's page."""
    ada = await (await browser.new_context()).new_page()
    bob = await (await browser.new_context()).new_page()
    await sign_in(ada, base_url(chat), "ada")
    await sign_in(bob, base_url(chat), "bob")
    await say(ada, "hello from ada")
    message = bob.locator("#message-list .message", has_text="hello from ada")
    await message.wait_for()
    assert await message.locator(".author").text_content() == "ada"


async def test_message_survives_reload(browser: Browser, chat: TestServer) -> None:
    """After a reload, the page shows the room's earlier messages again."""
    page = await (await browser.new_context()).new_page()
    await sign_in(page, base_url(chat), "ada")
    await say(page, "still here after reload")
    await page.reload()
    await page.wait_for_selector("body[data-connection=online]")
    await page.locator(
        "#message-list .message", has_text="still here after reload"
    ).wait_for()


async def test_signed_out_context_cannot_connect(
    browser: Browser, chat: TestServer
) -> None:
    """After signing out, the browser's WebSocket handshake is refused with 401."""
    page = await (await browser.new_context()).new_page()
    await sign_in(page, base_url(chat), "ada")
    await page.click(".sign-out button")
    await page.wait_for_selector("form[action='/sign-in']")
    async with page.expect_console_message(
        lambda message: "/ws' failed" in message.text
    ) as refusal:
        assert await page.evaluate(TRY_WEBSOCKET) == "closed 1006"
    # Chromium words a 401 answer to a handshake as "HTTP Authentication failed".
    text = (await refusal.value).text
    assert "401" in text or "Authentication failed" in text, text


async def test_page_reconnects_after_server_restart(
    browser: Browser, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """When the server restarts, the page goes offline, reconnects and re-joins."""
    config = make_config(tmp_path)
    first = await aiohttp_server(create_app(config))
    page = await (await browser.new_context()).new_page()
    await sign_in(page, base_url(first), "ada")
    await say(page, "before the restart")
    port = first.port
    await first.close()
    await page.wait_for_selector("body[data-connection=offline]")
    second = await aiohttp_server(create_app(config), port=port)
    await page.wait_for_selector("body[data-connection=online]", timeout=20_000)
    await say(page, "after the restart")
    texts = await page.locator("#message-list .message .text").all_text_contents()
    assert texts == ["before the restart", "after the restart"]
    await second.close()


async def test_link_with_malformed_escape_still_connects(
    browser: Browser, chat: TestServer
) -> None:
    """A link ending in '#%E0' opens the default room, connects, and throws nothing."""
    context = await browser.new_context()
    signing_in = await context.new_page()
    await sign_in(signing_in, base_url(chat), "ada")
    await signing_in.close()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{base_url(chat)}/#%E0")
    await page.wait_for_selector("body[data-connection=online]", timeout=10_000)
    await page.evaluate("location.hash = '%E0%A4'")  # a hashchange to another one
    await say(page, "connected anyway")
    assert await page.locator("#room-name").text_content() == "general"
    assert errors == []
