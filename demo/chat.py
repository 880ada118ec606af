"""The chat app: HTTP routes, the WebSocket route and the app factory.

Run it with::

    python -m aiohttp.web -H 127.0.0.1 -P 8080 demo.chat:init_app

or on several workers sharing ``DEMO_DATA_DIR`` and ``DEMO_REDIS_URL`` (``make
demo-cluster`` does this, with a Redis of its own)::

    gunicorn demo.chat:gunicorn_app -k aiohttp.GunicornWebWorker -w 2

Routes:

- ``GET /``: the chat page when signed in, the sign-in page otherwise.
- ``POST /sign-in`` (form field ``name``) and ``POST /sign-out``: set or clear
  the session cookie, then redirect to ``/``. A refused name redirects to
  ``/?error=<code>`` (``name``, ``script``, ``taken``); too many sign-ins from
  one address (an IPv6 client's /64) get 429 with ``Retry-After``. Signing in
  again signs the browser out of its previous session.
- ``GET /api/me``: the signed-in user as JSON, or 401.
- ``GET /ws``: the WebSocket, only for a signed-in browser on an allowed origin;
  429 when the session or user already holds its cap of sockets.
- ``/static/``: the page's CSS and JavaScript.
- ``GET /metrics``: the WebSocket server's metrics in Prometheus' text format,
  for the local host only (:mod:`demo.metrics`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from aiohttp_upgrade import Broker, Server, origin_allowed

from .auth import (
    clear_session_cookie,
    issue_token,
    read_session_cookie,
    set_session_cookie,
    verify_token,
)
from .config import Config
from .handler import ChatHandler, SocketData
from .limits import KeyedLimiter, address_key
from .metrics import add_metrics_route
from .models import User
from .names import NAME_PATTERN, NameRefused, clean_name
from .protocol import with_position
from .store import Store

__all__ = [
    "CHAT_KEY",
    "CONFIG_KEY",
    "NAME_PATTERN",
    "PAGES_KEY",
    "SIGN_IN_LIMITER_KEY",
    "STATIC_DIR",
    "STORE_KEY",
    "create_app",
    "gunicorn_app",
    "init_app",
]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# Frames of a room a page can resume from after losing its socket: the last
# RESUME_SIZE, for RESUME_TTL seconds.
RESUME_SIZE = 1000
RESUME_TTL = 600.0

CONFIG_KEY = web.AppKey("config", Config)
STORE_KEY = web.AppKey("store", Store)
CHAT_KEY = web.AppKey("chat", ChatHandler)
PAGES_KEY = web.AppKey("pages", dict[str, str])
SIGN_IN_LIMITER_KEY = web.AppKey("sign_in_limiter", KeyedLimiter)

# Sent with every response: the page loads only its own scripts and styles and
# connects only to its own origin; nothing may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Session:
    """A signed-in request: its user and the token that proved it."""

    user: User
    token: str
    session_id: str
    expires_at: int


async def current_session(request: web.Request) -> Session | None:
    """The session of ``request``'s cookie, or ``None``.

    ``None`` when the cookie is missing, forged, expired, or signed out: the
    signature and expiry are checked first, then the session is looked up.
    """
    value = read_session_cookie(request)
    if value is None:
        return None
    config = request.app[CONFIG_KEY]
    token = verify_token(config.secret, value, config.clock())
    if token is None:
        return None
    user = await request.app[STORE_KEY].user_for_session(
        token.session_id, config.clock()
    )
    if user is None:
        return None
    return Session(user, value, token.session_id, token.expires_at)


def _same_site_post(request: web.Request) -> None:
    """Refuse a form post made from another site (login/logout CSRF)."""
    if not origin_allowed(request, request.app[CONFIG_KEY].allowed_origins):
        raise web.HTTPForbidden(text="Origin not allowed")


def _see_other(location: str) -> web.Response:
    """A 303 redirect: after a form post the browser GETs ``location``."""
    return web.Response(status=303, headers={"Location": location})


# -- HTTP routes ------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    """The chat page when signed in, otherwise the sign-in page."""
    page = "index.html" if await current_session(request) else "sign-in.html"
    return web.Response(
        text=request.app[PAGES_KEY][page],
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Sign in under the posted ``name``; the user is created on first use.

    A browser that was signed in is signed out of its previous session (its
    sockets are closed with 4001); a user's oldest sessions beyond
    ``sessions_per_user``, and the oldest of all beyond ``max_sessions``, are
    signed out too. Refused: more sign-ins from the client's address (an IPv6 client's /64,
    see :func:`~demo.limits.address_key`) than its bucket allows (429), a name of the wrong shape or mixing scripts, and a name whose user
    has an open socket from another browser (redirects with ``?error=``).
    """
    _same_site_post(request)
    config = request.app[CONFIG_KEY]
    now = config.clock()
    # request.remote is the peer's address; behind a proxy it is the proxy's,
    # unless the app trusts forwarded headers (see the README).
    wait = request.app[SIGN_IN_LIMITER_KEY].take(address_key(request.remote), now)
    if wait:
        return web.Response(
            status=429,
            text="too many sign-ins from your address; try again shortly",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    form = await request.post()
    raw = form.get("name")
    try:
        name = clean_name(raw if isinstance(raw, str) else "")
    except NameRefused as exc:
        return _see_other(f"/?error={exc.code}")
    store, chat = request.app[STORE_KEY], request.app[CHAT_KEY]
    mine = await current_session(request)
    same_browser = mine.session_id if mine is not None else None
    existing = await store.find_user(name)
    if existing is not None and await chat.connected_elsewhere(
        existing.id, same_browser
    ):
        log.info("refused a sign-in as %s: connected elsewhere", existing.name)
        return _see_other("/?error=taken")
    token = issue_token(config.secret, now, config.session_ttl)
    try:
        user, revoked = await store.sign_in(
            name, token.session_id, token.expires_at, now, replaces=same_browser
        )
    except LookupError:
        return _see_other("/?error=taken")
    # The browser's previous session, and sessions beyond the caps: signed out
    # here at once, on other workers at their next heartbeat.
    for session_id in revoked:
        chat.end_session(session_id)
    log.info("%s signed in", user.name)
    response = _see_other("/")
    set_session_cookie(response, request, token, config.session_ttl)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    """Revoke the session, close its sockets and clear the cookie."""
    _same_site_post(request)
    session = await current_session(request)
    if session is not None:
        await request.app[STORE_KEY].delete_session(session.session_id)
        request.app[CHAT_KEY].end_session(session.session_id)
        log.info("%s signed out", session.user.name)
    response = _see_other("/")
    clear_session_cookie(response, request)
    return response


async def me(request: web.Request) -> web.Response:
    """The signed-in user, so the page can tell an ended session from a network drop."""
    session = await current_session(request)
    if session is None:
        raise web.HTTPUnauthorized(text="sign in first")
    return web.json_response(
        {"user": {"id": session.user.id, "name": session.user.name}}
    )


# -- the WebSocket route (Bun's fetch) ------------------------------------------


async def fetch(
    request: web.Request, server: Server[SocketData]
) -> web.StreamResponse | None:
    """Upgrade a signed-in request; 401 without a valid session, 429 when the
    session or its user already holds as many sockets as allowed.

    A foreign ``Origin`` never gets here: the server answers 403 itself.
    """
    session = await current_session(request)
    if session is None:
        return web.Response(status=401, text="sign in first")
    refusal = await request.app[CHAT_KEY].refusal(session.session_id, session.user.id)
    if refusal is not None:
        return web.Response(status=429, text=refusal)
    data = SocketData(
        created_at=request.app[CONFIG_KEY].clock(),
        token=session.token,
        user_id=session.user.id,
        user_name=session.user.name,
        session_id=session.session_id,
        expires_at=session.expires_at,
    )
    if server.upgrade(request, data=data):
        return None
    return web.Response(status=400, text="expected a WebSocket handshake")


# -- the app ----------------------------------------------------------------------


async def _add_security_headers(
    request: web.Request, response: web.StreamResponse
) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def create_app(config: Config) -> web.Application:
    """Build the chat app for ``config``; the database opens when the app starts."""
    app = web.Application()
    limits = config.limits
    store = Store(
        config.database_path,
        history_per_room=limits.history_per_room,
        max_stored_messages=limits.max_stored_messages,
        sessions_per_user=limits.sessions_per_user,
        max_sessions=limits.max_sessions,
        max_stored_bytes=limits.max_stored_bytes,
    )
    chat = ChatHandler(store, config.clock, limits)
    server = Server(
        chat, allowed_origins=config.allowed_origins, broker=_broker(config)
    )
    # Every room keeps a short history with positions, so that a page that
    # lost its socket resumes without reloading the room (docs/demo.rst).
    server.history.enable(
        "room:", prefix=True, size=RESUME_SIZE, ttl=RESUME_TTL, format=with_position
    )
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[CHAT_KEY] = chat
    app[SIGN_IN_LIMITER_KEY] = KeyedLimiter(limits.sign_in_rate, limits.sign_in_burst)
    # The two HTML pages are tiny: read them once instead of on every request.
    app[PAGES_KEY] = {
        page: (STATIC_DIR / page).read_text(encoding="utf-8")
        for page in ("index.html", "sign-in.html")
    }

    async def database(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        log.info("chat database: %s", config.database_path)
        heartbeat = asyncio.create_task(_heartbeat(chat, config.presence_heartbeat))
        yield
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        await store.close()

    app.cleanup_ctx.append(database)
    server.setup(app)
    app.on_response_prepare.append(_add_security_headers)
    app.router.add_get("/", index)
    app.router.add_post("/sign-in", sign_in)
    app.router.add_post("/sign-out", sign_out)
    app.router.add_get("/api/me", me)
    app.router.add_get("/ws", server.handler(fetch))
    app.router.add_static("/static/", STATIC_DIR)
    add_metrics_route(app, server)
    return app


def _broker(config: Config) -> Broker | None:
    """A RedisBroker when ``config`` names a Redis (or a Redis Cluster), else
    None (in-process)."""
    if config.redis_url is None:
        return None
    from aiohttp_upgrade import RedisBroker  # needs the redis extra

    where = "a Redis Cluster, seed" if config.redis_cluster else "Redis at"
    log.info("publishing through %s %s", where, _without_password(config.redis_url))
    return RedisBroker(
        config.redis_url,
        channel_prefix="demo-chat:",
        heartbeat_interval=config.presence_heartbeat,
        cluster=config.redis_cluster,
    )


def _without_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if at else url


async def _heartbeat(chat: ChatHandler, interval: float) -> None:
    """Every ``interval`` seconds, the chat's housekeeping (close the sockets of
    sessions signed out on other workers, delete unused users). A failing beat
    is logged and retried at the next one. (Presence needs none of it: the
    library's broker beats for it.)"""
    while True:
        await asyncio.sleep(interval)
        try:
            await chat.housekeeping()
        except Exception:
            log.exception("housekeeping failed; retrying")


def init_app(argv: list[str]) -> web.Application:
    """Entry point for ``python -m aiohttp.web demo.chat:init_app``.

    Settings come from environment variables (see :mod:`demo.config`); ``argv``
    takes no options beyond ``--help``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m aiohttp.web demo.chat:init_app",
        description="aiohttp-upgrade chat demo; configure with DEMO_* variables.",
    )
    parser.parse_args(argv)
    # python -m aiohttp.web has already set up DEBUG logging; replace it with ours.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    return create_app(Config.from_env(os.environ))


async def gunicorn_app() -> web.Application:
    """Entry point for gunicorn's aiohttp worker, one app per worker::

        gunicorn demo.chat:gunicorn_app -k aiohttp.GunicornWebWorker -w 2

    Settings as for :func:`init_app`; every worker needs the same ``DEMO_SECRET``
    and, to share rooms, ``DEMO_REDIS_URL``.
    """
    return init_app([])
