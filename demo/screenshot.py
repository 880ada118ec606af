"""Take the README's screenshot of the chat (``docs/chat.png``) in headless Chromium.

    python -m demo.screenshot [OUTPUT.png]

Starts the chat on a free loopback port with a throw-away database, signs two
people in from two browser contexts, lets them talk and saves what the first
one sees. Needs Playwright for Python and Debian's ``chromium`` (no browser
download: Playwright drives the system one). The browser test reuses the
helpers here.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from playwright.async_api import (
    Browser,
    Page,
    Playwright,
    ViewportSize,
    async_playwright,
)

from .chat import create_app
from .config import Config

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DEFAULT_OUTPUT",
    "launch_chromium",
    "main",
    "running_chat",
    "say",
    "sign_in",
    "take_screenshot",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "chat.png"
VIEWPORT: ViewportSize = {"width": 1100, "height": 640}


async def launch_chromium(playwright: Playwright) -> Browser:
    """Launch Debian's Chromium headless (Playwright downloads nothing)."""
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )


@asynccontextmanager
async def running_chat(data_dir: Path) -> AsyncIterator[str]:
    """Serve a chat app on a free loopback port; yield its base URL."""
    config = Config(data_dir=data_dir, secret=secrets.token_bytes(32))
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def sign_in(page: Page, base_url: str, name: str) -> None:
    """Sign in as ``name`` through the form and wait until the chat is online."""
    await page.goto(base_url + "/")
    await page.fill("#name", name)
    await page.click("button[type=submit]")
    await page.wait_for_selector("body[data-connection=online]")
    await page.wait_for_function(
        "name => document.getElementById('me-name').textContent === name", arg=name
    )


async def say(page: Page, text: str) -> None:
    """Type ``text`` into the composer, send it, and wait for the server's echo."""
    count = await page.locator("#message-list .message").count()
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await page.wait_for_function(
        "n => document.querySelectorAll('#message-list .message').length > n",
        arg=count,
    )


async def take_screenshot(output: Path) -> None:
    """Stage a short conversation and save the first person's view to ``output``."""
    with tempfile.TemporaryDirectory(prefix="chat-screenshot-") as tmp:
        async with running_chat(Path(tmp)) as base, async_playwright() as playwright:
            browser = await launch_chromium(playwright)
            try:
                ada_context = await browser.new_context(viewport=VIEWPORT)
                bob_context = await browser.new_context(viewport=VIEWPORT)
                ada = await ada_context.new_page()
                bob = await bob_context.new_page()
                await sign_in(ada, base, "ada")
                await sign_in(bob, base, "bob")
                await page_wait_members(ada, 2)
                await say(
                    ada, "Hi Bob! This socket was upgraded with server.upgrade()."
                )
                await say(bob, "Hi Ada. The cookie was checked before the upgrade.")
                await say(
                    ada, "And every message is saved to SQLite before it is published."
                )
                await say(bob, "Reload the page: the history is still here.")
                await ada.wait_for_function(
                    "document.querySelectorAll('#message-list .message').length === 4"
                )
                output.parent.mkdir(parents=True, exist_ok=True)
                await ada.screenshot(path=str(output))
            finally:
                await browser.close()


async def page_wait_members(page: Page, count: int) -> None:
    """Wait until ``page`` lists ``count`` members in its room."""
    await page.wait_for_function(
        "n => document.querySelectorAll('#member-list li').length === n", arg=count
    )


def main(argv: list[str]) -> None:
    """Write the screenshot to ``argv[0]`` or ``docs/chat.png``."""
    output = Path(argv[0]) if argv else DEFAULT_OUTPUT
    asyncio.run(take_screenshot(output))
    print(f"wrote {output}")


if __name__ == "__main__":
    main(sys.argv[1:])
