"""Bun's camelCase names on a socket or a server raise an AttributeError that
names the Python spelling."""

from __future__ import annotations

from typing import Any

import pytest

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

from .conftest import ConnectRaw, Recorder, ServeFactory

SOCKET_NAMES = [
    ("readyState", "ready_state"),
    ("sendText", "send_text"),
    ("sendBinary", "send_binary"),
    ("isSubscribed", "is_subscribed"),
    ("getBufferedAmount", "get_buffered_amount"),
    ("remoteAddress", "remote_address"),
    ("publishText", "publish_text"),
    ("publishBinary", "publish_binary"),
    ("binaryType", "bytes"),
]
SERVER_NAMES = [
    ("pendingWebSockets", "pending_websockets"),
    ("subscriberCount", "subscriber_count"),
    ("requestIP", "request.remote"),
    ("stop", "shutdown"),
]


@pytest.fixture
async def ws(serve: ServeFactory, connect_raw: ConnectRaw) -> ServerWebSocket[Any]:
    """An open server-side socket."""
    handler = Recorder()
    served = await serve(handler)
    await connect_raw(served.port)
    return (await handler.next("open")).ws


@pytest.mark.parametrize(
    ("bun", "python"), SOCKET_NAMES, ids=[bun for bun, _ in SOCKET_NAMES]
)
async def test_bun_name_on_a_socket_names_the_python_one(
    ws: ServerWebSocket[Any], bun: str, python: str
) -> None:
    """ws.<Bun name> raises AttributeError naming what to use instead."""
    with pytest.raises(AttributeError, match=python) as info:
        getattr(ws, bun)
    assert info.value.name == bun and info.value.obj is ws


@pytest.mark.parametrize(
    ("bun", "python"), SERVER_NAMES, ids=[bun for bun, _ in SERVER_NAMES]
)
def test_bun_name_on_a_server_names_the_python_one(bun: str, python: str) -> None:
    """server.<Bun name> raises AttributeError naming what to use instead."""
    server: Server[Any] = Server(WebSocketHandler())
    with pytest.raises(AttributeError, match=python):
        getattr(server, bun)


async def test_other_missing_names_raise_the_plain_error(
    ws: ServerWebSocket[Any],
) -> None:
    """A name that is not Bun's gets Python's usual message, and hasattr is False."""
    with pytest.raises(AttributeError, match=r"has no attribute 'nonsense'$"):
        ws.nonsense  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(ws, "sendText")
    assert not hasattr(Server(WebSocketHandler()), "nonsense")


def test_normal_lookup_is_not_overridden() -> None:
    """Only failed lookups reach the hint: __getattribute__ is object's own."""
    assert ServerWebSocket.__getattribute__ is object.__getattribute__
    assert Server.__getattribute__ is object.__getattribute__
