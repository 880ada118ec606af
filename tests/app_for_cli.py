"""A tiny app for ``python -m aiohttp.web -H HOST -P PORT tests.app_for_cli:init_func``.

Used by tests/test_lifecycle.py to check that aiohttp-upgrade works under aiohttp's
own command line runner; it echoes every message back.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

__all__ = ["init_func"]


class Echo(WebSocketHandler[Any]):
    """Echoes text as text and binary as binary."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        ws.send(message)


def fetch(request: web.Request, server: Server[Any]) -> web.StreamResponse | None:
    if server.upgrade(request):
        return None
    return web.Response(status=400, text="Upgrade failed")


def init_func(argv: list[str]) -> web.Application:
    """Build the app; ``argv`` is what aiohttp.web left over (unused)."""
    server: Server[Any] = Server(Echo())
    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    return app
