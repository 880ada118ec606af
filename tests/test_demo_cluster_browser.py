"""Two people in headless Chromium, each on a different worker process of the demo
(two ports, one SQLite file, one real redis-server), chat and see each other.

Uses Debian's ``chromium`` as tests/test_demo_browser.py does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .demo_cluster_support import DemoWorker, demo_workers
from .demo_support import BROWSER_MARKS, chromium
from .redis_support import RedisProcess, requires_redis, running_redis

pytestmark = [*BROWSER_MARKS, requires_redis]

if TYPE_CHECKING or importlib.util.find_spec("playwright") is not None:
    from playwright.async_api import Browser, Page

    from demo.screenshot import page_wait_members, say, sign_in


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    yield from running_redis()


@pytest.fixture
async def workers(
    redis: RedisProcess, tmp_path: Path
) -> AsyncIterator[tuple[DemoWorker, DemoWorker]]:
    async with demo_workers(tmp_path / "data", redis.url) as pair:
        yield pair


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


async def members(page: Page) -> list[str]:
    return await page.locator("#member-list li").all_text_contents()


async def test_two_people_on_two_workers_chat_and_see_each_other(
    browser: Browser, workers: tuple[DemoWorker, DemoWorker]
) -> None:
    """Ada's page on worker A and Bob's on worker B list both under "Here now"
    and show each other's messages."""
    a, b = workers
    ada = await (await browser.new_context()).new_page()
    bob = await (await browser.new_context()).new_page()
    await sign_in(ada, a.url, "ada")
    await sign_in(bob, b.url, "bob")
    await page_wait_members(ada, 2)
    await page_wait_members(bob, 2)
    assert await members(ada) == await members(bob) == ["ada", "bob"]
    await say(ada, "hello from worker A")
    await bob.locator(
        "#message-list .message", has_text="hello from worker A"
    ).wait_for()
    await say(bob, "hello from worker B")
    reply = ada.locator("#message-list .message", has_text="hello from worker B")
    await reply.wait_for()
    assert await reply.locator(".author").text_content() == "bob"
    await bob.close()
    await page_wait_members(ada, 1)
    assert await members(ada) == ["ada"]


async def test_a_third_person_closing_their_tab_leaves_both_pages(
    browser: Browser, workers: tuple[DemoWorker, DemoWorker]
) -> None:
    """Carol's tab (on worker B) closing removes her from "Here now" on Ada's page
    (worker A, told through Redis) and on Bob's (worker B)."""
    a, b = workers
    ada = await (await browser.new_context()).new_page()
    bob = await (await browser.new_context()).new_page()
    carol = await (await browser.new_context()).new_page()
    await sign_in(ada, a.url, "ada")
    await sign_in(bob, b.url, "bob")
    await sign_in(carol, b.url, "carol")
    for page in (ada, bob):
        await page_wait_members(page, 3)
    assert await members(ada) == await members(bob) == ["ada", "bob", "carol"]
    await carol.close()
    for page in (ada, bob):
        await page_wait_members(page, 2)
    assert await members(ada) == await members(bob) == ["ada", "bob"]
