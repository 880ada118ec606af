"""The demo under attack, over real connections: floods, pinned memory, expired
sessions, hostile text and borrowed names."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from pytest_aiohttp import AiohttpClient

from demo.auth import COOKIE_NAME
from demo.chat import CHAT_KEY, CONFIG_KEY, STORE_KEY, create_app
from demo.limits import Limits

from . import wire
from .demo_support import (
    TTL,
    Client,
    FakeClock,
    another_client,
    connect,
    join,
    make_config,
    next_frame,
    session_cookie,
    sign_in,
    start_chat,
    wait_for,
)

CYRILLIC_ADA = "\u0430da"
FULLWIDTH_ADA = "\uff21\uff24\uff21"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def chat_with(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    clock: FakeClock | None = None,
    **limits: Any,
) -> Client:
    """A chat app whose limits are the defaults but for ``limits``."""
    config = make_config(tmp_path, clock, limits=Limits(**limits))
    return await start_chat(aiohttp_client, config)


def say(room: str, text: str) -> dict[str, str]:
    return {"type": "message", "room": room, "text": text}


async def frames_until_close(ws: ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every text frame until the server closes; the close code is on ``ws``."""
    frames: list[dict[str, Any]] = []
    while True:
        async with asyncio.timeout(10):
            message = await ws.receive()
        if message.type is not WSMsgType.TEXT:
            assert message.type is WSMsgType.CLOSE, message
            return frames
        frames.append(json.loads(message.data))


async def sign_in_location(client: Client, name: str) -> tuple[str, bool]:
    """Where a sign-in as ``name`` redirects, and whether it set a cookie."""
    response = await client.post("/sign-in", data={"name": name}, allow_redirects=False)
    assert response.status == 303, await response.text()
    return response.headers["Location"], COOKIE_NAME in response.cookies


# -- message floods -------------------------------------------------------------


async def test_flood_gets_one_error_then_close_1008(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Frames over budget get one rate_limited error, are dropped, then 1008 closes."""
    client = await chat_with(aiohttp_client, tmp_path, message_burst=3, strikes=4)
    await sign_in(client, "mallory")
    ws = await connect(client)
    await join(ws, "general")  # the first of three tokens
    for n in range(7):  # 2 allowed, 1 warned, 3 dropped, 1 closes
        await ws.send_json(say("general", f"spam {n}"))
    frames = await frames_until_close(ws)
    assert [f["type"] for f in frames] == ["message", "message", "error"]
    assert frames[-1]["code"] == "rate_limited"
    assert ws.close_code == 1008
    saved = await client.app[STORE_KEY].recent_messages("general")
    assert [m.text for m in saved] == ["spam 0", "spam 1"]


async def test_reconnecting_does_not_refill_the_budget(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    """The budget belongs to the session: with it spent, a new socket gets 429,
    and once a token is back the new socket starts with that one token."""
    client = await chat_with(
        aiohttp_client, tmp_path, clock, message_burst=2, message_rate=1.0
    )
    await sign_in(client, "mallory")
    first = await connect(client)
    await join(first, "general")
    await first.send_json(say("general", "one"))
    await wait_for(first, "message")
    await first.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws")
    assert info.value.status == 429
    clock.advance(1)
    second = await connect(client)
    await join(second, "general")
    await second.send_json(say("general", "two"))
    assert (await next_frame(second))["code"] == "rate_limited"
    await second.close()


async def test_flooder_does_not_silence_others(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """While one user is cut off for flooding, another's messages still arrive."""
    client = await chat_with(aiohttp_client, tmp_path, message_burst=3, strikes=2)
    await sign_in(client, "mallory")
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    mallory = await connect(client)
    bob = await connect(other)
    await join(mallory, "general")
    await join(bob, "general")
    for n in range(6):
        await mallory.send_json(say("general", f"spam {n}"))
    await frames_until_close(mallory)
    await bob.send_json(say("general", "still heard"))
    while (frame := await wait_for(bob, "message"))["user"]["name"] != "bob":
        pass
    assert frame["text"] == "still heard"
    await bob.close()


async def test_a_ping_flood_is_limited_and_others_still_heard(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Pings count against a socket's frame budget (4 million answered pings went
    unlimited before): past it the flooder gets one rate_limited error frame and
    is not read, while another user's messages still arrive."""
    client = await chat_with(aiohttp_client, tmp_path, frame_rate=10.0, frame_burst=50)
    await sign_in(client, "mallory")
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    mallory = await connect(client)
    bob = await connect(other)
    await join(bob, "general")
    for _ in range(500):
        await mallory.ping()
    frame = await next_frame(mallory)
    assert (frame["type"], frame["code"]) == ("error", "rate_limited")
    await bob.send_json(say("general", "still heard"))
    assert (await wait_for(bob, "message"))["text"] == "still heard"
    await bob.close()
    await mallory.close()


# -- sign-in floods ---------------------------------------------------------------


async def test_sign_ins_are_limited_per_address(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    """Beyond its burst an address gets 429 with Retry-After, and no cookie."""
    client = await chat_with(
        aiohttp_client, tmp_path, clock, sign_in_burst=3, sign_in_rate=0.25
    )
    for n in range(3):
        await sign_in(client, f"user{n}")
    response = await client.post(
        "/sign-in", data={"name": "user3"}, allow_redirects=False
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "4"
    assert COOKIE_NAME not in response.cookies
    assert await client.app[STORE_KEY].find_user("user3") is None
    clock.advance(4)
    await sign_in(client, "user3")


# -- pinned memory ------------------------------------------------------------------


def test_handler_cuts_slow_readers_and_silent_clients(tmp_path: Path) -> None:
    """The chat handler caps buffered bytes, closes at the cap, and times out on
    what the client sends only."""
    chat = create_app(make_config(tmp_path))[CHAT_KEY]
    assert chat.options.backpressure_limit == Limits().backpressure_limit <= 1 << 20
    assert chat.options.close_on_backpressure_limit is True
    assert chat.options.reset_idle_timeout_on_send is False


async def test_client_that_stops_reading_is_cut_and_leaves(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A socket that stops reading is closed once the limit is buffered for it."""
    client = await chat_with(aiohttp_client, tmp_path, backpressure_limit=64 * 1024)
    await sign_in(client, "sloth")
    assert client.port is not None
    raw = await wire.connect(
        client.port, headers={"Cookie": f"{COOKIE_NAME}={session_cookie(client)}"}
    )
    await raw.send(wire.OP_TEXT, b'{"type": "join", "room": "general"}')
    while b'"type":"joined"' not in (await raw.recv())[2]:
        pass
    chat = client.app[CHAT_KEY]
    big = json.dumps({"type": "notice", "text": "x" * 60_000})
    for _ in range(5_000):  # 300 MB: far beyond any socket buffer
        if not chat.members("general"):
            break
        chat.server.publish("room:general", big)
        await asyncio.sleep(0)  # yield so the frame is flushed
    assert chat.members("general") == []
    await raw.close()


async def test_sockets_per_session_are_capped(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A session's socket beyond the cap is refused with 429 before upgrading."""
    client = await chat_with(aiohttp_client, tmp_path, sockets_per_session=2)
    await sign_in(client, "ada")
    tabs = [await connect(client), await connect(client)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws")
    assert info.value.status == 429
    await tabs[0].close()
    tabs[0] = await connect(client)  # a closed tab frees its place
    for tab in tabs:
        await tab.close()


async def test_sockets_per_user_are_capped_over_sessions(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A user's sockets over all their sessions are capped too."""
    client = await chat_with(
        aiohttp_client, tmp_path, sockets_per_session=2, sockets_per_user=3
    )
    laptop = await another_client(aiohttp_client, client)
    await sign_in(client, "ada")
    await sign_in(laptop, "ada")  # a second browser: a second session
    assert session_cookie(laptop) != session_cookie(client)
    tabs = [await connect(client), await connect(client), await connect(laptop)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws")
    assert info.value.status == 429
    for tab in tabs:
        await tab.close()


async def test_concurrent_handshakes_cannot_pass_the_cap(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Handshakes racing past the route's check are closed with 1008 on open."""
    client = await chat_with(aiohttp_client, tmp_path, sockets_per_session=2)
    await sign_in(client, "ada")

    async def attempt() -> str:
        try:
            ws = await client.ws_connect("/ws")
        except aiohttp.WSServerHandshakeError as exc:
            return str(exc.status)
        message = await ws.receive()
        if message.type is WSMsgType.TEXT:
            return "hello"  # left open, as an attacker would
        assert ws.close_code == 1008
        return "1008"

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    assert outcomes.count("hello") == 2
    assert set(outcomes) <= {"hello", "429", "1008"}


# -- expiry -------------------------------------------------------------------------


async def test_socket_is_closed_when_its_session_expires(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    """A silent socket is closed (4001) when its session expires, and leaves the room."""
    client = await start_chat(aiohttp_client, make_config(tmp_path, clock))
    await sign_in(client, "ada")
    clock.advance(TTL - 1)  # ada's session ends one (real) second from now
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    ada = await connect(client)
    bob = await connect(other)
    await join(ada, "general")
    await join(bob, "general")
    assert [f["type"] for f in await frames_until_close(ada)] == ["member_joined"]
    assert ada.close_code == 4001
    left = await wait_for(bob, "member_left")
    assert left["user"]["name"] == "ada"
    await bob.close()


async def test_silent_client_in_busy_room_leaves(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A client that answers nothing is closed after idle_timeout although the room
    keeps sending to it, and leaves the room."""
    client = await chat_with(aiohttp_client, tmp_path, idle_timeout=1)
    await sign_in(client, "ghost")
    ghost = await client.ws_connect("/ws", autoping=False)  # will not answer pings
    await ghost.send_json({"type": "join", "room": "general"})
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    bob = await connect(other)
    await join(bob, "general")
    chat = client.app[CHAT_KEY]

    async def busy_room() -> None:
        while True:
            chat.server.publish("room:general", '{"type": "notice"}')
            await asyncio.sleep(0.05)  # paces the traffic; nothing waits on it

    traffic = asyncio.create_task(busy_room())
    try:
        async with asyncio.timeout(10):
            left = await wait_for(bob, "member_left")
    finally:
        traffic.cancel()
    assert left["user"]["name"] == "ghost"
    await bob.close()
    await ghost.close()


# -- hostile text ---------------------------------------------------------------


async def test_lone_surrogate_gets_error_frame(
    aiohttp_client: AiohttpClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A JSON \\ud800 escape gets a bad_text error; no 1011, no traceback."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    ws = await connect(client)
    await join(ws, "general")
    with caplog.at_level(logging.ERROR):
        await ws.send_str('{"type": "message", "room": "general", "text": "\\ud800"}')
        error = await next_frame(ws)
    assert (error["type"], error["code"]) == ("error", "bad_text")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    await ws.send_json(say("general", "still open"))
    assert (await wait_for(ws, "message"))["text"] == "still open"
    await ws.close()


async def test_stored_history_is_bounded_in_bytes(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Long messages of 4-byte characters keep the stored text under
    max_stored_bytes, the newest kept."""
    client = await chat_with(
        aiohttp_client, tmp_path, max_stored_bytes=20_000, message_burst=100
    )
    await sign_in(client, "ada")
    ws = await connect(client)
    await join(ws, "general")
    for n in range(12):  # 12 x 7,997 bytes
        text = f"{n % 10}" + "\U0001f600" * 1999
        await ws.send_str(json.dumps(say("general", text), ensure_ascii=False))
        await wait_for(ws, "message")
    await ws.close()
    path = client.app[CONFIG_KEY].database_path
    with sqlite3.connect(path) as conn:
        texts = [row[0] for row in conn.execute("SELECT text FROM messages")]
    conn.close()
    assert sum(len(text.encode()) for text in texts) <= 20_000
    assert [text[0] for text in texts] == ["0", "1"]


# -- names ------------------------------------------------------------------------


async def test_mixed_script_name_is_refused(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A Latin name with a Cyrillic letter in it is refused without a cookie."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    stranger = await another_client(aiohttp_client, client)
    assert await sign_in_location(stranger, CYRILLIC_ADA) == ("/?error=script", False)


async def test_fullwidth_name_is_the_same_account(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Signing in as fullwidth ADA gives the account ada, not a second 'ada'."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    other = await another_client(aiohttp_client, client)
    await sign_in(other, FULLWIDTH_ADA)
    async with other.ws_connect("/ws") as ws:
        assert (await next_frame(ws))["user"] == {"id": 1, "name": "ada"}


@pytest.mark.parametrize(
    "name", ["ada", "ADA", FULLWIDTH_ADA], ids=["same", "upper", "fullwidth"]
)
async def test_name_in_use_elsewhere_is_refused(
    aiohttp_client: AiohttpClient, tmp_path: Path, name: str
) -> None:
    """While ada is connected, another browser cannot sign in under her name."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    ada = await connect(client)
    impostor = await another_client(aiohttp_client, client)
    assert await sign_in_location(impostor, name) == ("/?error=taken", False)
    await ada.close()


async def test_same_browser_may_sign_in_again(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """The browser that holds the connected session may sign in under its name again."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    ada = await connect(client)
    assert await sign_in_location(client, "ada") == ("/", True)
    await ada.close()


async def test_name_is_free_once_its_owner_disconnects(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Without passwords, a name is only held while its owner is connected."""
    client = await chat_with(aiohttp_client, tmp_path)
    await sign_in(client, "ada")
    ada = await connect(client)
    await join(ada, "general")
    witness = await another_client(aiohttp_client, client)
    await sign_in(witness, "bob")
    bob = await connect(witness)
    await join(bob, "general")
    await ada.close()
    await wait_for(bob, "member_left")  # ada's close hook has run
    other = await another_client(aiohttp_client, client)
    assert await sign_in_location(other, "ada") == ("/", True)
    await bob.close()
