"""The chat demo over real HTTP and WebSocket connections on loopback."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from demo.auth import COOKIE_NAME, issue_token
from demo.chat import STORE_KEY, init_app

from .demo_support import (
    SECRET,
    START,
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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> Client:
    return await start_chat(aiohttp_client, make_config(tmp_path, clock))


async def handshake_status(client: Client, **headers: str) -> int:
    """The HTTP status of a refused WebSocket handshake."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws", headers=headers)
    return info.value.status


# -- sign-in and the pages ----------------------------------------------------------


async def test_sign_in_sets_hardened_cookie(client: Client) -> None:
    """Signing in sets an HttpOnly, SameSite=Lax cookie with a max-age, not Secure."""
    response = await client.post(
        "/sign-in", data={"name": "ada"}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/"
    cookie = response.cookies[COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["max-age"] == str(TTL)
    assert not cookie["secure"]


async def test_signed_in_user_is_reported(client: Client) -> None:
    """After signing in, /api/me names the user."""
    await sign_in(client, "ada")
    response = await client.get("/api/me")
    assert await response.json() == {"user": {"id": 1, "name": "ada"}}


async def test_signed_out_api_is_401(client: Client) -> None:
    """Without a session /api/me answers 401."""
    response = await client.get("/api/me")
    assert response.status == 401


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 25, "<script>", "a/b"], ids=lambda n: repr(n)[:12]
)
async def test_bad_names_are_refused(client: Client, name: str) -> None:
    """A name outside the allowed pattern gets no cookie and an error redirect."""
    response = await client.post("/sign-in", data={"name": name}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/?error=name"
    assert COOKIE_NAME not in response.cookies


async def test_sign_in_from_foreign_origin_is_forbidden(client: Client) -> None:
    """A sign-in form posted from another site is refused (login CSRF)."""
    response = await client.post(
        "/sign-in",
        data={"name": "ada"},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert response.status == 403


async def test_home_page_depends_on_session(client: Client) -> None:
    """/ serves the sign-in form when signed out and the chat page when signed in."""
    signed_out = await (await client.get("/")).text()
    await sign_in(client, "ada")
    signed_in = await (await client.get("/")).text()
    assert 'action="/sign-in"' in signed_out
    assert "chat.js" in signed_in


async def test_pages_carry_security_headers(client: Client) -> None:
    """Every page is served with a restrictive Content-Security-Policy."""
    response = await client.get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_static_files_are_served(client: Client) -> None:
    """The page's script is served from /static/."""
    response = await client.get("/static/chat.js")
    assert response.status == 200
    assert "new WebSocket" in await response.text()


# -- who may open the WebSocket ------------------------------------------------------


async def test_websocket_without_cookie_is_401(client: Client) -> None:
    """A handshake without a session cookie is answered 401, not upgraded."""
    assert await handshake_status(client) == 401


@pytest.mark.parametrize(
    "forge",
    [
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),
        lambda v: v.split(".")[0] + ".9999999999." + v.split(".")[2],
        lambda v: issue_token(b"another-secret-another-secret-32", START, TTL).value,
        lambda v: "garbage",
    ],
    ids=["bad-signature", "pushed-expiry", "other-secret", "garbage"],
)
async def test_websocket_with_forged_cookie_is_401(
    aiohttp_client: AiohttpClient, client: Client, forge: Callable[[str], str]
) -> None:
    """A tampered or foreign-signed session cookie is answered 401."""
    await sign_in(client, "ada")
    forged = forge(session_cookie(client))
    stranger = await another_client(aiohttp_client, client)
    assert await handshake_status(stranger, Cookie=f"{COOKIE_NAME}={forged}") == 401


async def test_websocket_with_expired_cookie_is_401(
    client: Client, clock: FakeClock
) -> None:
    """A session cookie is refused once its expiry has passed."""
    await sign_in(client, "ada")
    clock.advance(TTL)
    assert await handshake_status(client) == 401


async def test_websocket_after_sign_out_is_401(
    aiohttp_client: AiohttpClient, client: Client
) -> None:
    """A cookie replayed after sign-out is refused: the server revoked the session."""
    await sign_in(client, "ada")
    cookie = session_cookie(client)
    await client.post("/sign-out", allow_redirects=False)
    replay = await another_client(aiohttp_client, client)
    assert await handshake_status(replay, Cookie=f"{COOKIE_NAME}={cookie}") == 401


async def test_websocket_from_foreign_origin_is_403(client: Client) -> None:
    """A signed-in browser on another site's page is refused with 403."""
    await sign_in(client, "ada")
    assert await handshake_status(client, Origin="https://evil.example") == 403


async def test_websocket_from_own_origin_connects(client: Client) -> None:
    """A handshake whose Origin is the app's own is upgraded."""
    await sign_in(client, "ada")
    origin = str(client.make_url("/")).rstrip("/")
    ws = await connect(client, Origin=origin)
    await ws.close()


async def test_websocket_from_listed_origin_connects(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """An origin listed in DEMO_ALLOWED_ORIGINS may open the WebSocket."""
    config = make_config(tmp_path, allowed_origins=("https://chat.example",))
    client = await start_chat(aiohttp_client, config)
    await sign_in(client, "ada")
    ws = await connect(client, Origin="https://chat.example")
    await ws.close()


async def test_hello_names_the_signed_in_user(client: Client) -> None:
    """The first frame on a new socket says who the server thinks you are."""
    await sign_in(client, "ada")
    async with client.ws_connect("/ws") as ws:
        assert await next_frame(ws) == {
            "type": "hello",
            "user": {"id": 1, "name": "ada"},
        }


# -- rooms, history and presence -----------------------------------------------------


async def test_join_returns_history_oldest_first(client: Client) -> None:
    """Joining a room returns its earlier messages, oldest first."""
    await sign_in(client, "ada")
    ws = await connect(client)
    await join(ws, "general")
    for text in ("one", "two"):
        await ws.send_json({"type": "message", "room": "general", "text": text})
        await wait_for(ws, "message")
    await ws.close()
    later = await connect(client)
    joined = await join(later, "general")
    assert [m["text"] for m in joined["history"]] == ["one", "two"]
    await later.close()


async def test_join_lists_current_members(
    aiohttp_client: AiohttpClient, client: Client
) -> None:
    """The join answer lists everybody in the room, including the joiner."""
    await sign_in(client, "ada")
    ada = await connect(client)
    await join(ada, "general")
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    bob = await connect(other)
    joined = await join(bob, "general")
    assert [u["name"] for u in joined["members"]] == ["ada", "bob"]
    await ada.close()
    await bob.close()


async def test_joins_and_leaves_are_broadcast(
    aiohttp_client: AiohttpClient, client: Client
) -> None:
    """Members see another person join and, when their socket closes, leave."""
    await sign_in(client, "ada")
    ada = await connect(client)
    await join(ada, "general")
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    bob = await connect(other)
    await join(bob, "general")
    joined = await wait_for(ada, "member_joined")
    await bob.close()
    left = await wait_for(ada, "member_left")
    assert joined["user"]["name"] == left["user"]["name"] == "bob"
    await ada.close()


async def test_message_reaches_other_members(
    aiohttp_client: AiohttpClient, client: Client
) -> None:
    """A message is delivered to every member of the room, author included."""
    await sign_in(client, "ada")
    ada = await connect(client)
    await join(ada, "general")
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    bob = await connect(other)
    await join(bob, "general")
    await bob.send_json({"type": "message", "room": "general", "text": "hi ada"})
    seen_by_ada = await wait_for(ada, "message")
    seen_by_bob = await wait_for(bob, "message")
    assert seen_by_ada == seen_by_bob
    assert seen_by_ada["user"] == {"id": 2, "name": "bob"}
    assert seen_by_ada["text"] == "hi ada"
    await ada.close()
    await bob.close()


async def test_message_is_saved_before_it_is_published(client: Client) -> None:
    """By the time a message arrives, it is already in the database."""
    await sign_in(client, "ada")
    ws = await connect(client)
    await join(ws, "general")
    await ws.send_json({"type": "message", "room": "general", "text": "durable"})
    frame = await wait_for(ws, "message")
    store = client.app[STORE_KEY]
    saved = await store.recent_messages("general")
    assert [(m.id, m.text) for m in saved] == [(frame["id"], "durable")]
    await ws.close()


async def test_other_rooms_do_not_receive_messages(
    aiohttp_client: AiohttpClient, client: Client
) -> None:
    """A message to one room is not delivered to members of another."""
    await sign_in(client, "ada")
    ada = await connect(client)
    await join(ada, "general")
    await join(ada, "random")
    await ada.send_json({"type": "message", "room": "random", "text": "psst"})
    await ada.send_json({"type": "message", "room": "general", "text": "hello"})
    first = await wait_for(ada, "message")
    second = await wait_for(ada, "message")
    assert [first["room"], second["room"]] == ["random", "general"]
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    bob = await connect(other)
    joined = await join(bob, "general")
    assert [m["text"] for m in joined["history"]] == ["hello"]
    await ada.close()
    await bob.close()


async def test_history_survives_restart(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A new app on the same data directory serves the old app's messages."""
    config = make_config(tmp_path)
    first = await start_chat(aiohttp_client, config)
    await sign_in(first, "ada")
    cookie = session_cookie(first)
    ws = await connect(first)
    await join(ws, "general")
    await ws.send_json({"type": "message", "room": "general", "text": "still here"})
    await wait_for(ws, "message")
    await ws.close()
    await first.close()

    second = await start_chat(aiohttp_client, config)
    ws = await connect(second, Cookie=f"{COOKIE_NAME}={cookie}")
    joined = await join(ws, "general")
    assert [(m["user"]["name"], m["text"]) for m in joined["history"]] == [
        ("ada", "still here")
    ]
    await ws.close()


# -- hostile or broken input --------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{oops", "bad_json"),
        ("[]", "bad_message"),
        ('{"type": "dance"}', "bad_type"),
        ('{"type": "join", "room": "../etc"}', "bad_room"),
        ('{"type": "message", "room": "general", "text": ""}', "bad_text"),
        ('{"type": "message", "room": "elsewhere", "text": "x"}', "not_joined"),
    ],
    ids=["not-json", "array", "unknown-type", "bad-room", "empty-text", "not-joined"],
)
async def test_malformed_frame_gets_error_and_socket_stays_open(
    client: Client, frame: str, code: str
) -> None:
    """A malformed frame gets an error frame back and the socket keeps working."""
    await sign_in(client, "ada")
    ws = await connect(client)
    await join(ws, "general")
    await ws.send_str(frame)
    error = await next_frame(ws)
    assert (error["type"], error["code"]) == ("error", code)
    assert (await join(ws, "general"))["room"] == "general"
    await ws.close()


async def test_binary_frame_gets_error(client: Client) -> None:
    """A binary frame is answered with an error frame, not a crash."""
    await sign_in(client, "ada")
    ws = await connect(client)
    await ws.send_bytes(json.dumps({"type": "join", "room": "general"}).encode())
    error = await next_frame(ws)
    assert error["code"] == "not_text"
    await ws.close()


async def test_spoofed_author_is_ignored(
    aiohttp_client: AiohttpClient, client: Client
) -> None:
    """A message claiming another user's id is saved and sent as its real author's."""
    other = await another_client(aiohttp_client, client)
    await sign_in(other, "bob")
    await sign_in(client, "mallory")
    ws = await connect(client)
    await join(ws, "general")
    spoof = {
        "type": "message",
        "room": "general",
        "text": "I am bob",
        "user_id": 1,
        "user": {"id": 1, "name": "bob"},
    }
    await ws.send_json(spoof)
    frame = await wait_for(ws, "message")
    assert frame["user"] == {"id": 2, "name": "mallory"}
    saved = await client.app[STORE_KEY].recent_messages("general")
    assert saved[0].user.name == "mallory"
    await ws.close()


# -- the session ends ---------------------------------------------------------------


async def test_sign_out_closes_open_sockets(client: Client) -> None:
    """Signing out closes that session's open sockets with code 4001."""
    await sign_in(client, "ada")
    ws = await connect(client)
    await client.post("/sign-out", allow_redirects=False)
    message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4001


async def test_expired_session_closes_socket_on_next_frame(
    client: Client, clock: FakeClock
) -> None:
    """A socket whose session expired is closed with 4001 when it next speaks."""
    await sign_in(client, "ada")
    ws = await connect(client)
    clock.advance(TTL)
    await ws.send_json({"type": "join", "room": "general"})
    message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4001


# -- start-up ----------------------------------------------------------------------


def test_init_app_reads_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """init_app takes its settings from DEMO_* variables."""
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    monkeypatch.setenv("DEMO_DATA_DIR", str(tmp_path / "chat-data"))
    monkeypatch.setenv("DEMO_SECRET", SECRET.decode())
    monkeypatch.delenv("DEMO_ALLOWED_ORIGINS", raising=False)
    app = init_app([])
    assert app[STORE_KEY].path == tmp_path / "chat-data" / "chat.sqlite3"


async def test_first_start_creates_data_directory(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Starting the app creates its data directory and database file."""
    config = make_config(tmp_path)
    assert not config.data_dir.exists()
    await start_chat(aiohttp_client, config)
    assert config.database_path.is_file()


async def test_sign_out_clears_cookie(client: Client) -> None:
    """Signing out tells the browser to drop the session cookie."""
    await sign_in(client, "ada")
    response = await client.post("/sign-out", allow_redirects=False)
    assert response.status == 303
    assert response.cookies[COOKIE_NAME]["max-age"] == "0"
    assert (await client.get("/api/me")).status == 401
