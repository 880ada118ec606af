"""The chat page resumes after losing its socket, in headless Chromium (Debian's
``chromium`` through Playwright, as tests/test_demo_browser.py)."""

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


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def chat(aiohttp_server: AiohttpServer, tmp_path: Path) -> TestServer:
    return await aiohttp_server(create_app(make_config(tmp_path)))


async def test_page_back_online_shows_what_it_missed_once_in_order(
    browser: Browser, chat: TestServer
) -> None:
    """A page that lost its socket (offline) while another user wrote shows
    every message once, in order, when it is back, resumed without a reload."""
    base = str(chat.make_url("")).rstrip("/")
    ada_context = await browser.new_context()
    ada = await ada_context.new_page()
    bob = await (await browser.new_context()).new_page()
    await sign_in(ada, base, "ada")
    await sign_in(bob, base, "bob")
    await say(ada, "before")
    await ada_context.set_offline(True)
    await ada.evaluate("state.socket.close()")
    await ada.wait_for_selector("body[data-connection=offline]")
    for text in ("while away 1", "while away 2", "while away 3"):
        await say(bob, text)
    await ada_context.set_offline(False)
    await ada.wait_for_selector("body[data-connection=online]", timeout=20_000)
    await ada.wait_for_selector("body[data-recovery=resumed]")
    await ada.locator("#message-list .message", has_text="while away 3").wait_for()
    texts = await ada.locator("#message-list .message .text").all_text_contents()
    assert texts == ["before", "while away 1", "while away 2", "while away 3"]
    await say(bob, "live again")
    await ada.locator("#message-list .message", has_text="live again").wait_for()
