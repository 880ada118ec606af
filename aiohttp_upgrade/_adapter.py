"""The HTTP adapter: aiohttp request handler, ``upgrade()``, the 101 and the take-over.

:class:`HttpAdapter` is the part of a :class:`~aiohttp_upgrade.Server` that talks
to aiohttp; the server's public ``handler()`` and ``upgrade()`` delegate to it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from aiohttp import web

from ._adopt import adopt
from ._closecode import CloseCode
from ._compat import compiled_mask, reads_as_upgrade, take_over
from ._connection import Connection
from ._errors import InvalidOptionError, InvalidStateError
from ._frames import build_close_frame, xor_mask
from ._handshake import Accept, check_handshake, response_headers, wants_websocket
from ._hooks import HookTable, Kind
from ._hub import Hub
from ._lifecycle import Lifecycle
from ._origin import origin_allowed
from ._outbox import Flusher
from ._reads import ProtocolAdapter
from ._websocket import SocketContext

if TYPE_CHECKING:
    from ._server import Server

__all__ = ["Headers", "HttpAdapter", "check_handshake_timeout"]

logger = logging.getLogger("aiohttp_upgrade")

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_WRONG_VERSION: Final = "wrong-version"
_GOING_AWAY: Final = build_close_frame(CloseCode.GOING_AWAY, "")
# RFC 9110 5.1 (a token) and 5.5 (no CR, LF or NUL in a field value).
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE: Final = re.compile(r"[\r\n\x00]")

_ADAPTER_KEY: Final = web.RequestKey("aiohttp_upgrade._server", object)
_UPGRADE_KEY: Final = web.RequestKey("aiohttp_upgrade.upgrade", object)


@dataclass(slots=True)
class _Upgrade:
    accept: Accept
    data: Any
    headers: tuple[tuple[str, str], ...]


class _UpgradeResponse(web.StreamResponse):
    """The 101 response; after the handshake the socket owns the stream."""

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _checked_headers(headers: Headers | None) -> tuple[tuple[str, str], ...]:
    """``upgrade(headers=...)`` as pairs, each name a token and each value a str
    without CR, LF or NUL (no header injection); TypeError or ValueError naming
    the header otherwise."""
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    checked = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"headers must be (name, value) pairs, got {item!r}")
        name, value = item
        if not isinstance(name, str):
            raise TypeError(f"header names must be str, got {name!r}")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}: must be an HTTP token")
        if not isinstance(value, str):
            raise TypeError(
                f"header {name!r}: value must be str, got {type(value).__name__} "
                f"{value!r}"
            )
        if _BAD_VALUE.search(value):
            raise ValueError(f"header {name!r}: value contains CR, LF or NUL")
        checked.append((name, value))
    return tuple(checked)


def check_handshake_timeout(value: object) -> float | None:
    """``Server(handshake_timeout=)`` checked: None or a finite number > 0."""
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise InvalidOptionError(
            "handshake_timeout",
            f"must be a number of seconds > 0 or None, got {value!r}",
        )
    return value


def _refused_origin(request: web.Request, allowed: tuple[str, ...] | None) -> bool:
    # The Origin check takes every request that lists websocket on any Upgrade
    # line, a superset of what check_handshake() accepts, and upgrade() only
    # takes requests that passed here: no upgrade skips it.
    if allowed is None or not wants_websocket(request.headers):
        return False
    if origin_allowed(request, allowed):
        return False
    logger.info(
        "WebSocket handshake refused: Origin %s",
        ", ".join(request.headers.getall("Origin", [])),
    )
    return True


def _not_upgraded(request: web.Request, result: object) -> web.StreamResponse:
    """The answer to a request ``fetch`` did not upgrade (see ``Server.handler``)."""
    if request.get(_UPGRADE_KEY) == _WRONG_VERSION:
        return web.Response(
            status=426,
            headers={"Sec-WebSocket-Version": "13"},
            text="Upgrade Required: Sec-WebSocket-Version 13",
        )
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        logger.error(
            "fetch for %s returned None without upgrading the request; "
            "return a response when server.upgrade() returns False",
            request.path,
        )
    elif isinstance(result, bool):
        logger.error(
            "fetch for %s returned %s (the result of server.upgrade()) "
            "and the request was not upgraded; return a response when "
            "server.upgrade() returns False",
            request.path,
            result,
        )
    else:
        logger.error(
            "fetch for %s returned %r, which is not a response", request.path, result
        )
    return web.Response(status=500, text="Internal Server Error")


class HttpAdapter:
    """Turns aiohttp requests into sockets for one server.

    Args:
        server: the public server, passed to ``fetch`` and marking its requests.
        allowed_origins: as ``Server(allowed_origins=)``, as a tuple.
        hooks: the handler's hook table.
        hub: the server's pub/sub hub.
        lifecycle: where a new socket is registered.
    """

    __slots__ = (
        "_warned",
        "allowed_origins",
        "context",
        "lifecycle",
        "server",
        "set_up",
    )

    def __init__(
        self,
        server: Server[Any],
        allowed_origins: tuple[str, ...] | None,
        hooks: HookTable,
        hub: Hub,
        lifecycle: Lifecycle,
    ) -> None:
        self.server = server
        self.allowed_origins = allowed_origins
        self.context = SocketContext(
            options=server.options,
            hooks=hooks,
            flusher=Flusher(),
            hub=hub,
            forget=lifecycle.forget,
            gone=lifecycle.gone,
            tasks=lifecycle.tasks,
            mask=compiled_mask or xor_mask,
            counters=hub.counters,
        )
        """What every socket of the server shares."""
        self.lifecycle = lifecycle
        self.set_up = False
        """Set by ``Server.setup``: without it an upgrade logs a warning once."""
        self._warned: set[str] = set()

    def _warn_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)

    def handler(self, fetch: Callable[..., Any]) -> Handler:
        """``Server.handler``: see there."""
        if not callable(fetch):
            raise TypeError(
                f"server.handler() needs a fetch(request, server) function, got {fetch!r}"
            )

        async def handle(request: web.Request) -> web.StreamResponse:
            if _refused_origin(request, self.allowed_origins):
                self.context.counters.refuse("origin")
                return web.Response(status=403, text="Origin not allowed")
            request[_ADAPTER_KEY] = self.server
            result: object = fetch(request, self.server)
            if inspect.isawaitable(result):
                result = await result
            upgrade = request.get(_UPGRADE_KEY)
            if isinstance(upgrade, _Upgrade):
                self._check_upgraded(request, result)
                return await self._serve(request, upgrade)
            return _not_upgraded(request, result)

        return handle

    def _check_upgraded(self, request: web.Request, result: object) -> None:
        """Log what is odd about an upgraded request (see ``Server.handler``)."""
        if result is True:
            self._warn_once(
                "returned-true",
                "fetch for %s returned True (the result of server.upgrade()); "
                "the request is upgraded, but fetch should return None "
                "after a successful upgrade",
                request.path,
            )
        elif result is not None:
            logger.warning(
                "fetch upgraded %s and also returned %r; the response is ignored",
                request.path,
                result,
            )
        if not self.set_up:
            self._warn_once(
                "no-setup",
                "%s was upgraded by a Server whose setup(app) was never "
                "called: app shutdown will not close its sockets with 1001 "
                "and handshake_timeout does not apply; call "
                "server.setup(app) on the root application",
                request.path,
            )

    def upgrade(
        self, request: web.BaseRequest, data: Any, headers: Headers | None
    ) -> bool:
        """``Server.upgrade``: see there."""
        if request.get(_ADAPTER_KEY) is not self.server:
            raise InvalidStateError(
                "upgrade() needs a request routed through this server's handler()"
            )
        extra = _checked_headers(headers)
        if request.get(_UPGRADE_KEY) is not None:
            return False
        counters = self.context.counters
        if self.lifecycle.shutting_down:
            counters.refuse("shutting_down")
            return False
        decision = check_handshake(
            request.method,
            request.headers,
            self.context.options.per_message_deflate,
            (request.version.major, request.version.minor),
        )
        if not isinstance(decision, Accept):
            if decision.status == 426:
                request[_UPGRADE_KEY] = _WRONG_VERSION
            counters.refuse("version" if decision.status == 426 else "handshake")
            logger.debug("WebSocket handshake refused: %s", decision.reason)
            return False
        if not reads_as_upgrade(request):
            # check_handshake() follows aiohttp's rule; this is the safety net
            # should an aiohttp release change it.
            logger.debug(
                "WebSocket handshake refused: aiohttp reads on as HTTP after it"
            )
            counters.refuse("handshake")
            return False
        request[_UPGRADE_KEY] = _Upgrade(decision, data, extra)
        return True

    async def _serve(
        self, request: web.Request, upgrade: _Upgrade
    ) -> web.StreamResponse:
        """Write the 101, make the socket, hand the transport over to it."""
        headers, subprotocol = response_headers(upgrade.accept, upgrade.headers)
        response = _UpgradeResponse(status=101, headers=headers)
        try:
            await response.prepare(request)
        except OSError as exc:
            # aiohttp's ClientConnectionResetError included: the peer half-closed
            # or reset right after its handshake. Routine on a public port.
            logger.debug(
                "WebSocket handshake from %s abandoned: the peer left before the "
                "101 was written (%s)",
                request.remote,
                exc,
            )
            return response
        transport = request.transport
        if transport is None or transport.is_closing():
            logger.debug(
                "WebSocket handshake from %s abandoned: the peer left as the 101 "
                "was written",
                request.remote,
            )
            return response
        if self.lifecycle.shutting_down:
            # shutdown() ran while this handshake was answered: nothing would
            # close a socket opened now, so the connection ends at once.
            transport.write(_GOING_AWAY)
            transport.close()
            return response
        connection = Connection(
            transport,
            self.context,
            cast(Any, upgrade.data),
            subprotocol,
            request.remote or "",
            upgrade.accept.deflate,
        )
        # From here on the socket owns the transport; the request ends now.
        tail = take_over(request, ProtocolAdapter(connection))
        own = adopt(transport, connection)
        if own is not None:  # the loop's plain socket transport, replaced by ours
            transport = cast(asyncio.Transport, own)
            connection.use_transport(transport, own.poller)
        # Pause the protocol whenever a byte is buffered, so that "resumed" means
        # "empty": the drain hook relies on it.
        transport.set_write_buffer_limits(high=0)
        self.lifecycle.add(connection)
        connection.dispatcher.dispatch(Kind.OPEN)
        if tail:
            connection.data_received(tail)
        return response
