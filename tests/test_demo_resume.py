"""The chat demo resumes a room from a position (server.history) instead of
reloading it: over real sockets, against the real app and its SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.client import ClientWebSocketResponse
from pytest_aiohttp import AiohttpClient

from .demo_support import (
    Client,
    another_client,
    connect,
    join,
    make_config,
    next_frame,
    sign_in,
    start_chat,
    wait_for,
)


@pytest.fixture
async def ada(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    client = await start_chat(aiohttp_client, make_config(tmp_path))
    await sign_in(client, "ada")
    return client


async def say(ws: ClientWebSocketResponse, text: str) -> dict[str, Any]:
    await ws.send_json({"type": "message", "room": "general", "text": text})
    return await wait_for(ws, "message")


async def test_room_frames_carry_positions(ada: Client) -> None:
    """The join answer carries the room's position and the room's messages the
    following ones (presence announcements are not history: they take none)."""
    ws = await connect(ada)
    joined = await join(ws, "general")
    epoch, offset = joined["position"].split(":")
    first, second = await say(ws, "one"), await say(ws, "two")
    assert first["position"] == f"{epoch}:{int(offset) + 1}"
    assert second["position"] == f"{epoch}:{int(offset) + 2}"
    await ws.close()


async def test_rejoin_with_since_replays_the_missed_frames_once(
    aiohttp_client: AiohttpClient, ada: Client
) -> None:
    """A client that rejoins with the last position it saw gets every frame
    published meanwhile, once and in order, then 'resumed' (no history reload)."""
    ws = await connect(ada)
    await join(ws, "general")
    position = (await say(ws, "seen"))["position"]
    await ws.close()
    bob_client = await another_client(aiohttp_client, ada)
    await sign_in(bob_client, "bob")
    bob = await connect(bob_client)
    await join(bob, "general")
    for text in ("missed-1", "missed-2", "missed-3"):
        await say(bob, text)
    again = await connect(ada)
    await again.send_json({"type": "join", "room": "general", "since": position})
    frames = []
    while (frame := await next_frame(again))["type"] != "resumed":
        frames.append(frame)
    texts = [f["text"] for f in frames if f["type"] == "message"]
    assert texts == ["missed-1", "missed-2", "missed-3"]
    offsets = [int(f["position"].split(":")[1]) for f in frames]
    assert offsets == sorted(set(offsets))
    assert frame["position"] == frames[-1]["position"]
    assert {m["name"] for m in frame["members"]} == {"ada", "bob"}
    await again.close()
    await bob.close()


async def test_rejoin_with_unusable_since_reloads_the_room(ada: Client) -> None:
    """A position the server cannot resume from (garbage here) is answered with
    'joined' and the room's history from the database, as on a first load."""
    ws = await connect(ada)
    await join(ws, "general")
    await say(ws, "kept")
    await ws.close()
    again = await connect(ada)
    await again.send_json({"type": "join", "room": "general", "since": "nonsense"})
    joined = await wait_for(again, "joined")
    assert [m["text"] for m in joined["history"]] == ["kept"]
    await again.close()
