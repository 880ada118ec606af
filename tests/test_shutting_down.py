"""``server.shutting_down``: ``fetch`` can tell a shutdown from a bad request."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from aiohttp_upgrade import Server

from .conftest import Recorder, ServeFactory


def fetch(request: web.Request, server: Server[None]) -> web.StreamResponse | None:
    """The pattern the docs show: 503 with Retry-After while shutting down."""
    if server.shutting_down:
        return web.Response(status=503, headers={"Retry-After": "5"})
    if server.upgrade(request):
        return None
    return web.Response(status=400, text="Upgrade failed")


async def test_shutting_down_is_false_while_serving(serve: ServeFactory) -> None:
    """A started server is not shutting down."""
    served = await serve(Recorder())
    assert served.server.shutting_down is False


async def test_shutting_down_is_true_after_shutdown(serve: ServeFactory) -> None:
    """After server.shutdown() the server says it is shutting down."""
    served = await serve(Recorder())
    await served.server.shutdown()
    assert served.server.shutting_down is True


async def test_fetch_answers_503_with_retry_after_after_shutdown(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A handshake after shutdown() gets the 503 and Retry-After fetch chose."""
    served = await serve(Recorder(), fetch)
    await served.server.shutdown()
    try:
        await client_session.ws_connect(served.url)
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 503
        assert exc.headers is not None and exc.headers["Retry-After"] == "5"
    else:
        raise AssertionError("the handshake was not refused")
