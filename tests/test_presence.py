"""Presence on one process: ``ws.track`` / ``untrack`` / ``update_presence``,
``server.presence`` and the handler's batched ``presence`` hook, on real sockets."""

from __future__ import annotations

import asyncio
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from aiohttp_upgrade import InvalidStateError, ServerWebSocket, WebSocketHandler
from aiohttp_upgrade._hub import Hub
from aiohttp_upgrade._presence import PresenceTable
from aiohttp_upgrade._presence_api import Presence

from .conftest import ConnectWs, Served, ServeFactory

TIMEOUT = 10
ROOM = "room"

Diff = tuple[str, dict[str, list[Any]], dict[str, list[Any]]]
Action = Callable[[ServerWebSocket[Any]], object]


class Tracker(WebSocketHandler[Any]):
    """Runs ``actions[text]`` on a socket for each text message it gets, and
    records the outcome (None or the exception), every diff and every close."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.actions: dict[str, Action] = {}
        self.outcomes: asyncio.Queue[BaseException | None] = asyncio.Queue()
        self.diffs: asyncio.Queue[Diff] = asyncio.Queue()
        self.closed: asyncio.Queue[ServerWebSocket[Any]] = asyncio.Queue()

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        assert isinstance(message, str)
        try:
            self.actions[message](ws)
        except Exception as exc:
            self.outcomes.put_nowait(exc)
        else:
            self.outcomes.put_nowait(None)

    def presence(
        self, topic: str, joins: dict[str, list[Any]], leaves: dict[str, list[Any]]
    ) -> None:
        self.diffs.put_nowait((topic, joins, leaves))

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.closed.put_nowait(ws)


async def run(
    handler: Tracker, client: aiohttp.ClientWebSocketResponse, action: Action
) -> BaseException | None:
    """Have the server run ``action`` on the socket of ``client``; its outcome."""
    name = f"action {len(handler.actions)}"
    handler.actions[name] = action
    await client.send_str(name)
    return await asyncio.wait_for(handler.outcomes.get(), TIMEOUT)


async def next_diff(handler: Tracker) -> Diff:
    return await asyncio.wait_for(handler.diffs.get(), TIMEOUT)


async def setup(serve: ServeFactory, **options: Any) -> tuple[Tracker, Served]:
    handler = Tracker(**options)
    return handler, await serve(handler)


def track(key: object, meta: object = None, topic: str = ROOM) -> Action:
    return lambda ws: ws.track(topic, key, meta)  # type: ignore[arg-type]


async def test_a_tracked_socket_is_listed_and_its_join_is_one_diff(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """track() lists the member in server.presence at once and the hook gets its join."""
    handler, served = await setup(serve)
    client = await connect_ws(served.url)
    assert await run(handler, client, track("alice", {"name": "Alice"})) is None
    assert served.server.presence.list(ROOM) == {"alice": [{"name": "Alice"}]}
    assert served.server.presence.count(ROOM) == 1
    assert await next_diff(handler) == (ROOM, {"alice": [{"name": "Alice"}]}, {})


async def test_two_sockets_with_one_key_are_one_member_until_the_last_leaves(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """Two tabs of one key are one member with two metas; it stays while one is open."""
    handler, served = await setup(serve)
    first, second = await connect_ws(served.url), await connect_ws(served.url)
    await run(handler, first, track("alice", "tab 1"))
    await run(handler, second, track("alice", "tab 2"))
    presence = served.server.presence
    assert presence.list(ROOM) == {"alice": ["tab 1", "tab 2"]}
    await next_diff(handler)
    await first.close()
    await asyncio.wait_for(handler.closed.get(), TIMEOUT)
    assert presence.get(ROOM, "alice") == ["tab 2"]
    assert await next_diff(handler) == (ROOM, {}, {"alice": ["tab 1"]})
    await second.close()
    await asyncio.wait_for(handler.closed.get(), TIMEOUT)
    assert presence.list(ROOM) == {}
    assert presence.topics() == []


async def test_members_are_in_the_metrics(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """``server.metrics().presence_members`` counts members (keys) per topic:
    two tabs of one key are one member."""
    handler, served = await setup(serve)
    first, second = await connect_ws(served.url), await connect_ws(served.url)
    await run(handler, first, track("alice", "tab 1"))
    await run(handler, second, track("alice", "tab 2"))
    await run(handler, second, track("alice", "tab 2", topic="other"))
    assert served.server.metrics().presence_members == 2


async def test_closing_untracks_before_the_close_hook(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """A socket that closes has left every topic's presence when ``close`` runs."""
    handler, served = await setup(serve)
    client = await connect_ws(served.url)
    await run(handler, client, track("bob", topic="a"))
    await run(handler, client, track("bob", topic="b"))
    await client.close()
    await asyncio.wait_for(handler.closed.get(), TIMEOUT)
    assert served.server.presence.topics() == []


async def test_untrack_ends_the_entry_and_says_whether_there_was_one(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """untrack() returns True once, then False; the member leaves."""
    handler, served = await setup(serve)
    client = await connect_ws(served.url)
    await run(handler, client, track("carol"))
    results: list[bool] = []
    await run(handler, client, lambda ws: results.append(ws.untrack(ROOM)))
    await run(handler, client, lambda ws: results.append(ws.untrack(ROOM)))
    assert results == [True, False]
    assert served.server.presence.list(ROOM) == {}


async def test_an_update_is_the_old_meta_leaving_and_the_new_joining(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """update_presence() changes the listed meta; the diff has old in leaves, new in joins."""
    handler, served = await setup(serve)
    client = await connect_ws(served.url)
    await run(handler, client, track("dave", {"status": "here"}))
    await next_diff(handler)
    action: Action = lambda ws: ws.update_presence(ROOM, {"status": "away"})  # noqa: E731
    assert await run(handler, client, action) is None
    assert served.server.presence.get(ROOM, "dave") == [{"status": "away"}]
    assert await next_diff(handler) == (
        ROOM,
        {"dave": [{"status": "away"}]},
        {"dave": [{"status": "here"}]},
    )


async def test_the_meta_is_copied_at_the_call(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """Changing the dict given to track() afterwards changes nothing in the view."""
    handler, served = await setup(serve)
    client = await connect_ws(served.url)
    meta = {"name": "Erin"}
    await run(handler, client, track("erin", meta))
    meta["name"] = "changed"
    assert served.server.presence.get(ROOM, "erin") == [{"name": "Erin"}]


def _nested(depth: int) -> list[object]:
    """A list nested ``depth`` deep (deeper than the JSON encoder recurses)."""
    meta: list[object] = []
    for _ in range(depth):
        meta = [meta]
    return meta


BAD_CALLS: list[tuple[Action, type[BaseException], str]] = [
    (track(42), TypeError, "presence key must be a str"),
    (track(""), ValueError, "must not be empty"),
    (track("k", {1, 2}), TypeError, "JSON value"),
    (track("k", object()), TypeError, "JSON value"),
    (track("k", math.nan), TypeError, "JSON value"),
    (track("k", _nested(100_000)), TypeError, "JSON value"),
    (track("k", "x" * 200), ValueError, "max_presence_meta_length"),
    (track("k", topic=""), ValueError, "topic must not be empty"),
    (lambda ws: ws.update_presence(ROOM, 1), InvalidStateError, "not tracked"),
]


@pytest.mark.parametrize(
    ("action", "error", "message"),
    BAD_CALLS,
    ids=[
        "int-key",
        "empty-key",
        "set-meta",
        "object-meta",
        "nan-meta",
        "deep-meta",
        "oversized-meta",
        "empty-topic",
        "update-untracked",
    ],
)
async def test_bad_input_raises_at_the_call_and_registers_nothing(
    serve: ServeFactory,
    connect_ws: ConnectWs,
    action: Action,
    error: type[BaseException],
    message: str,
) -> None:
    """A bad key, meta or topic raises a clear error and leaves no trace in the view."""
    handler, served = await setup(serve, max_presence_meta_length=100)
    client = await connect_ws(served.url)
    outcome = await run(handler, client, action)
    assert isinstance(outcome, error)
    assert message in str(outcome)
    assert served.server.presence.topics() == []
    # The socket can still be tracked: nothing was half-registered.
    assert await run(handler, client, track("k", "ok")) is None
    assert await next_diff(handler) == (ROOM, {"k": ["ok"]}, {})


async def test_tracking_twice_in_one_topic_raises_and_keeps_the_first(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """A second track() of one socket in one topic is an error; the first entry stays."""
    handler, served = await setup(serve)
    client = await connect_ws(served.url)
    await run(handler, client, track("frank", 1))
    outcome = await run(handler, client, track("frank", 2))
    assert isinstance(outcome, InvalidStateError)
    assert "update_presence" in str(outcome)
    assert served.server.presence.list(ROOM) == {"frank": [1]}


async def test_tracking_after_close_raises(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """track() and update_presence() on a closed socket raise InvalidStateError;
    untrack() returns False."""
    handler, served = await setup(serve)
    client = await connect_ws(served.url)
    await client.close()
    ws = await asyncio.wait_for(handler.closed.get(), TIMEOUT)
    with pytest.raises(InvalidStateError, match="closed"):
        ws.track(ROOM, "ghost")
    with pytest.raises(InvalidStateError, match="closed"):
        ws.update_presence(ROOM, 1)
    assert ws.untrack(ROOM) is False
    assert served.server.presence.topics() == []


async def test_nothing_is_sent_to_clients_unless_the_app_sends_it(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """A subscriber of the topic gets no frame when someone is tracked in it."""
    handler, served = await setup(serve)
    watcher, tracked = await connect_ws(served.url), await connect_ws(served.url)
    await run(handler, watcher, lambda ws: ws.subscribe(ROOM))
    await run(handler, tracked, track("gina"))
    await next_diff(handler)
    await run(handler, watcher, lambda ws: ws.send("marker"))
    frame = await asyncio.wait_for(watcher.receive(), TIMEOUT)
    assert frame.data == "marker"


async def test_publish_local_reaches_the_topics_subscribers(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """presence.publish_local() sends to this process's subscribers of the topic."""
    handler, served = await setup(serve)
    watcher = await connect_ws(served.url)
    await run(handler, watcher, lambda ws: ws.subscribe(ROOM))
    assert served.server.presence.publish_local(ROOM, "news") == len("news")
    frame = await asyncio.wait_for(watcher.receive(), TIMEOUT)
    assert frame.data == "news"


async def test_an_async_hook_gets_the_diffs_in_order(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """An async presence hook is awaited one diff at a time, in order."""

    class Slow(Tracker):
        async def presence(  # type: ignore[override]
            self,
            topic: str,
            joins: dict[str, list[Any]],
            leaves: dict[str, list[Any]],
        ) -> None:
            await asyncio.sleep(0)
            self.diffs.put_nowait((topic, joins, leaves))

    handler = Slow()
    served = await serve(handler)
    client = await connect_ws(served.url)
    await run(handler, client, track("hal", 1))
    assert await next_diff(handler) == (ROOM, {"hal": [1]}, {})
    await run(handler, client, lambda ws: ws.untrack(ROOM))
    assert await next_diff(handler) == (ROOM, {}, {"hal": [1]})


async def test_changes_during_a_slow_async_hook_merge_into_one_diff(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """Changes made while an async hook is still awaited reach it as one diff
    per topic when it returns (a join and leave meanwhile cancel out), not as a
    queue of every batch."""

    class Blocked(Tracker):
        release = asyncio.Event()

        async def presence(  # type: ignore[override]
            self,
            topic: str,
            joins: dict[str, list[Any]],
            leaves: dict[str, list[Any]],
        ) -> None:
            self.diffs.put_nowait((topic, joins, leaves))
            await self.release.wait()

    handler = Blocked()
    served = await serve(handler)
    presence = served.server.presence
    first, second = await connect_ws(served.url), await connect_ws(served.url)
    await run(handler, first, track("hal", 1))
    presence.flush()
    assert await next_diff(handler) == (ROOM, {"hal": [1]}, {})  # hook blocked
    for action in (track("ivy", 2), lambda ws: ws.untrack(ROOM), track("jo", 3)):
        await run(handler, second, action)
        presence.flush()
    handler.release.set()
    assert await next_diff(handler) == (ROOM, {"jo": [3]}, {})


async def test_a_failing_hook_is_logged_and_closes_nothing(
    serve: ServeFactory, connect_ws: ConnectWs, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception from the presence hook is logged; the socket stays open."""

    class Failing(Tracker):
        def presence(
            self,
            topic: str,
            joins: dict[str, list[Any]],
            leaves: dict[str, list[Any]],
        ) -> None:
            super().presence(topic, joins, leaves)
            raise RuntimeError("boom")

    handler = Failing()
    served = await serve(handler)
    client = await connect_ws(served.url)
    with caplog.at_level(logging.ERROR, logger="aiohttp_upgrade"):
        await run(handler, client, track("ivy"))
        await next_diff(handler)
    assert "presence hook failed" in caplog.text
    assert await run(handler, client, lambda ws: ws.untrack(ROOM)) is None


def test_a_misspelt_presence_hook_warns() -> None:
    """``on_presence`` is recognised as a slip for the ``presence`` hook."""

    class Slip(WebSocketHandler[Any]):
        def on_presence(self, topic: str, joins: Any, leaves: Any) -> None:
            pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Slip()
    assert any("'presence'" in str(w.message) for w in caught)


# -- the table, without sockets ---------------------------------------------------


async def test_a_thousand_joins_in_one_turn_are_one_diff() -> None:
    """1,000 sockets tracked at once reach the hook as one diff of 1,000 joins."""
    diffs: list[Diff] = []
    done = asyncio.Event()

    def hook(topic: str, joins: Any, leaves: Any) -> None:
        diffs.append((topic, joins, leaves))
        done.set()

    table = PresenceTable(hook, False, set(), 100)
    for number in range(1000):
        table.track(object(), ROOM, f"user {number}", None)
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert len(diffs) == 1
    assert len(diffs[0][1]) == 1000


async def test_a_join_and_leave_within_a_batch_cancel_out() -> None:
    """An entry that joins and leaves before the batch ends is no diff at all."""
    diffs: list[Diff] = []

    def hook(topic: str, joins: Any, leaves: Any) -> None:
        diffs.append((topic, joins, leaves))

    table = PresenceTable(hook, False, set(), 100)
    port, other = object(), object()
    table.track(port, ROOM, "brief", None)
    table.untrack(port, ROOM)
    table.track(other, ROOM, "stays", None)
    table.flush()
    assert diffs == [(ROOM, {"stays": [None]}, {})]


async def test_a_resync_with_the_same_entries_is_no_diff() -> None:
    """replace() with what the view holds already changes nothing and tells nobody."""
    diffs: list[Diff] = []
    table = PresenceTable(lambda *diff: diffs.append(diff), False, set(), 100)
    table.replace("node", {1: (ROOM, "a", 1), 2: (ROOM, "b", 2)})
    table.flush()
    diffs.clear()
    table.replace("node", {1: (ROOM, "a", 1), 2: (ROOM, "b", 2)})
    table.flush()
    assert diffs == []
    table.replace("node", {1: (ROOM, "a", 1)})
    table.flush()
    assert diffs == [(ROOM, {}, {"b": [2]})]


async def test_flush_hands_the_batch_to_a_plain_hook_at_once() -> None:
    """Presence.flush() delivers the pending diff before it returns, so that a
    snapshot taken after it and the diffs after it fit together."""
    diffs: list[Diff] = []
    table = PresenceTable(lambda *diff: diffs.append(diff), False, set(), 100)
    port = object()
    table.track(port, ROOM, "ada", None)
    Presence(table, Hub()).flush()
    assert diffs == [(ROOM, {"ada": [None]}, {})]
    table.untrack(port, ROOM)
    table.flush()
    assert diffs[1] == (ROOM, {}, {"ada": [None]})
