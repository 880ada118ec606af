"""Sessions over a real server and a real SQLite file: signing in again revokes
the old session, sessions cannot multiply a user's frame budget, and the users
and sessions tables stay bounded however many sign-ins arrive."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from pytest_aiohttp import AiohttpClient

from demo.auth import COOKIE_NAME
from demo.chat import CHAT_KEY, CONFIG_KEY
from demo.limits import Limits

from .demo_support import (
    Client,
    FakeClock,
    another_client,
    connect,
    make_config,
    next_frame,
    session_cookie,
    sign_in,
    start_chat,
)


async def chat_with(
    aiohttp_client: AiohttpClient, tmp_path: Path, **limits: Any
) -> Client:
    """A chat app on a fake clock whose limits are the defaults but for ``limits``."""
    config = make_config(tmp_path, FakeClock(), limits=Limits(**limits))
    return await start_chat(aiohttp_client, config)


async def me_status(client: Client, cookie: str) -> int:
    """What /api/me answers a browser holding only the session cookie ``cookie``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            client.make_url("/api/me"), headers={"Cookie": f"{COOKIE_NAME}={cookie}"}
        ) as response,
    ):
        return response.status


def row_counts(client: Client) -> dict[str, int]:
    """Rows in the users and sessions tables of the app's database file."""
    path = client.app[CONFIG_KEY].database_path
    with sqlite3.connect(path) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("users", "sessions")
        }
    conn.close()
    return counts


# -- one budget per user -------------------------------------------------------------


async def test_signing_in_twenty_times_does_not_multiply_the_budget(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Twenty sessions of one user, each with a socket, share one frame budget."""
    client = await chat_with(
        aiohttp_client, tmp_path, message_burst=3, sign_in_burst=100
    )
    browsers = [await another_client(aiohttp_client, client) for _ in range(20)]
    for browser in browsers:
        await sign_in(browser, "mallory")
    answered = 0
    for browser in browsers:
        try:
            ws = await connect(browser)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status in (401, 429)  # a revoked session, or a cap
            continue
        await ws.send_json({"type": "message", "room": "nowhere", "text": "x"})
        answer = await next_frame(ws)
        assert answer["code"] in ("not_joined", "rate_limited"), answer
        answered += answer["code"] == "not_joined"
        await ws.close()
    assert answered == 3


# -- signing in again ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ada", "bob"], ids=["same-name", "other-name"])
async def test_signing_in_again_revokes_the_old_cookie(
    aiohttp_client: AiohttpClient, tmp_path: Path, name: str
) -> None:
    """A browser that signs in again gets a new session; its old cookie is signed out."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    old = session_cookie(client)
    await sign_in(client, name)
    assert session_cookie(client) != old
    assert await me_status(client, session_cookie(client)) == 200
    assert await me_status(client, old) == 401


@pytest.mark.parametrize("name", ["ada", "bob"], ids=["same-name", "other-name"])
async def test_signing_in_again_closes_the_old_sessions_sockets(
    aiohttp_client: AiohttpClient, tmp_path: Path, name: str
) -> None:
    """The sockets of the replaced session are closed with 4001 (session ended)."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    old_tab = await connect(client)
    await sign_in(client, name)
    message = await old_tab.receive(timeout=10)
    assert message.type is WSMsgType.CLOSE, message
    assert old_tab.close_code == 4001
    new_tab = await connect(client)
    await new_tab.close()


# -- bounded tables ------------------------------------------------------------------


async def test_sessions_per_user_are_capped_oldest_revoked(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Beyond sessions_per_user, a user's oldest sessions are signed out."""
    client = await chat_with(
        aiohttp_client, tmp_path, sessions_per_user=3, sign_in_burst=100
    )
    cookies = []
    for _ in range(8):
        await sign_in(client, "ada")
        cookies.append(session_cookie(client))
        client.session.cookie_jar.clear()  # a new browser each time
    statuses = [await me_status(client, cookie) for cookie in cookies]
    assert statuses == [401] * 5 + [200] * 3


async def test_tables_stay_bounded_after_many_sign_ins(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Many sign-ins under many names leave at most max_sessions sessions, and,
    after the housekeeping, no user without a session, message or socket."""
    client = await chat_with(
        aiohttp_client, tmp_path, max_sessions=10, sign_in_burst=1000
    )
    for n in range(60):
        await sign_in(client, f"user{n % 40}")
        client.session.cookie_jar.clear()
        assert row_counts(client)["sessions"] <= 10
    await client.app[CHAT_KEY].housekeeping()
    assert row_counts(client) == {"users": 10, "sessions": 10}
