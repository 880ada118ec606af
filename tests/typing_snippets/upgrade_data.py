"""Checked by tests/test_typing.py with mypy --strict, not imported by pytest.

A trailing comment ``E: <code>`` means that line must get exactly that error, and
``R: <type>`` marks a ``reveal_type`` that must reveal ``<type>``; every other line
must be clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import reveal_type

from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler


@dataclass
class User:
    name: str


class Chat(WebSocketHandler[User]):
    def open(self, ws: ServerWebSocket[User]) -> None:
        reveal_type(ws.data)  # R: upgrade_data.User


chat: Server[User] = Server(Chat())
optional: Server[User | None] = Server(WebSocketHandler[User | None]())
nothing: Server[None] = Server(WebSocketHandler[None]())

CHAT: web.AppKey[Server[User]] = web.AppKey("chat", Server[User])


def fetch(request: web.Request) -> None:
    chat.upgrade(request)  # E: call-arg
    chat.upgrade(request, data=None)  # E: arg-type
    chat.upgrade(request, data=User("ada"))
    chat.upgrade(request, data=User("ada"), headers={"X-Id": "1"})
    optional.upgrade(request)
    optional.upgrade(request, data=None)
    optional.upgrade(request, data=User("ada"))
    nothing.upgrade(request)
    nothing.upgrade(request, data="x")  # E: call-overload
    server = request.config_dict[CHAT]
    reveal_type(server)  # R: aiohttp_upgrade._server.Server[upgrade_data.User]


def make_app() -> web.Application:
    app = web.Application()
    chat.setup(app, key=CHAT)
    optional.setup(app, key=CHAT)  # E: arg-type
    reveal_type(app[CHAT])  # R: aiohttp_upgrade._server.Server[upgrade_data.User]
    return app
