"""A tiny app run in a real process by tests/test_lifecycle.py, under each runner:

- ``python -m aiohttp.web -H HOST -P PORT tests.app_for_cli:init_func``
- ``python -m tests.app_for_cli run_app PORT`` (``web.run_app``)
- ``python -m tests.app_for_cli app_runner PORT`` (``web.AppRunner`` + ``TCPSite``)
- ``gunicorn tests.app_for_cli:gunicorn_app -k aiohttp.GunicornWebWorker``

It echoes every message; ``GET /pending`` answers ``server.pending_websockets``;
its async close hook hops to a thread and then prints ``close <code>``, so a test
sees that graceful shutdown awaited it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from aiohttp import web

from aiohttp_upgrade import SERVER_KEY, Server, ServerWebSocket, WebSocketHandler

__all__ = ["gunicorn_app", "init_func"]


class Echo(WebSocketHandler[Any]):
    """Echoes text as text and binary as binary; reports closes on stdout."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        ws.send(message)

    async def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        await asyncio.to_thread(str, "work a close hook does, e.g. a database write")
        print(f"close {code}", flush=True)


def fetch(request: web.Request, server: Server[Any]) -> web.StreamResponse | None:
    if server.upgrade(request):
        return None
    return web.Response(status=400, text="Upgrade failed")


async def pending(request: web.Request) -> web.Response:
    return web.Response(text=str(request.app[SERVER_KEY].pending_websockets))


def init_func(argv: list[str] | None = None) -> web.Application:
    """Build the app; ``argv`` is what aiohttp.web left over (unused)."""
    server: Server[Any] = Server(Echo())
    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    app.router.add_get("/pending", pending)
    return app


async def gunicorn_app() -> web.Application:
    """The app factory for gunicorn's aiohttp worker."""
    return init_func()


async def _app_runner(port: int) -> None:
    runner = web.AppRunner(init_func())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"Running on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "run_app":
        web.run_app(init_func(), host="127.0.0.1", port=port)
    else:
        asyncio.run(_app_runner(port))
