"""Origin checking against cross-site WebSocket hijacking. Pure apart from reading the request."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from yarl import URL

__all__ = ["origin_allowed"]


def _origin_key(origin: str) -> tuple[str, str, int | None] | None:
    try:
        url = URL(origin.strip())
    except ValueError:
        return None
    if not url.scheme or not url.host:
        return None
    return (url.scheme.lower(), url.host.lower(), url.port)


def origin_allowed(
    request: web.BaseRequest, allowed_origins: Iterable[str] = ()
) -> bool:
    """True when the request's ``Origin`` is its own origin or one of ``allowed_origins``.

    Browsers always send ``Origin`` on a WebSocket handshake, so a cookie-authenticated
    socket must check it: any page on the web can open a WebSocket to your server and
    the browser will attach your cookies. A request without ``Origin`` (not from a
    browser) is allowed; ``Origin: null`` is not, nor are several origins (in
    several ``Origin`` lines or one space-separated list, RFC 6454 7.1), which a
    browser never sends for a WebSocket.
    """
    origins = request.headers.getall("Origin", [])
    if not origins:
        return True
    if len(origins) > 1:
        return False
    origin = origins[0]
    key = _origin_key(origin)
    if key is None:
        return False
    if key == _origin_key(f"{request.scheme}://{request.host}"):
        return True
    return any(key == _origin_key(allowed) for allowed in allowed_origins)
