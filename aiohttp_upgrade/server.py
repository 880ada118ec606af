"""``Server``: the aiohttp adapter that gives request handlers Bun's ``server.upgrade()``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, cast, overload

from aiohttp import web

from ._compat import (
    compiled_mask,
    reads_as_upgrade,
    set_keepalive_timeout,
    take_over,
)
from .broker import Broker, LocalBroker
from .closecode import CloseCode, check_close_code
from .connection import Connection
from .dispatcher import Kind
from .errors import InvalidOptionError, InvalidStateError
from .frames import OP_TEXT, build_close_frame, build_frame
from .handler import WebSocketHandler, hook_table
from .handshake import Accept, check_handshake, response_headers, wants_websocket
from .origin import origin_allowed
from .outbox import Flusher
from .parser import xor_mask
from .topics import TopicRegistry, check_topic
from .websocket import ReadyState, ServerWebSocket, SocketContext, _payload

__all__ = ["Fetch", "Server"]

logger = logging.getLogger("aiohttp_upgrade")

DataT = TypeVar("DataT")
_T = TypeVar("_T")

GOING_AWAY: Final = CloseCode.GOING_AWAY
# How long app shutdown waits for close hooks before it moves on.
SHUTDOWN_TIMEOUT: Final = 5.0
# Seconds a connection gets to send a complete request head before it is closed:
# uWebSockets' HTTP idle timeout, which Bun inherits.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
# The idle timer advances in ticks of idle_timeout / IDLE_TICKS; pings go out
# at PING_TICK of them, so a socket closes between 7/8 and 8/8 of idle_timeout.
IDLE_TICKS: Final = 8
PING_TICK: Final = 6

_OPEN: Final = ReadyState.OPEN

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Fetch = Callable[
    [web.Request, "Server[DataT]"],
    Awaitable[web.StreamResponse | None] | web.StreamResponse | None,
]


@dataclass(slots=True)
class _Upgrade:
    accept: Accept
    data: Any
    headers: tuple[tuple[str, str], ...]


_WRONG_VERSION: Final = "wrong-version"
# RFC 9110 5.1 (a token) and 5.5 (no CR, LF or NUL in a field value).
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE: Final = re.compile(r"[\r\n\x00]")

_ADAPTER_KEY: Final = web.RequestKey("aiohttp_upgrade.server", object)
# Every Server set up on an app, in order: they share its handshake deadline.
_SERVERS_KEY: Final = web.AppKey("aiohttp_upgrade.servers", tuple)
_UPGRADE_KEY: Final = web.RequestKey("aiohttp_upgrade.upgrade", object)


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


class Server(Generic[DataT]):
    """Upgrades aiohttp requests to WebSockets handled by one :class:`WebSocketHandler`.

    Args:
        websocket_handler: the handler whose hooks run for every socket.
        allowed_origins: None (default, as Bun) accepts any ``Origin``. An iterable
            makes the adapter answer 403, before ``fetch`` runs, to a handshake whose
            ``Origin`` is neither the request's own origin nor listed.
        handshake_timeout: seconds a connection may take to send a complete
            request head, counted from connecting (and, on a keep-alive connection,
            from the previous response). A client that is slower, such as a
            slowloris sending its handshake a byte at a time, is disconnected.
            :meth:`setup` applies it to the app, so it holds under ``web.run_app``,
            ``python -m aiohttp.web`` and ``web.AppRunner`` alike. It is aiohttp's
            keep-alive timer, so it also closes idle keep-alive HTTP connections
            after that long and takes the place of ``run_app(keepalive_timeout=)``.
            None leaves aiohttp's own keep-alive timeout in charge (75 s under
            ``run_app``, 3630 s under a bare ``AppRunner``). Upgraded sockets are
            governed by the handler's ``idle_timeout`` instead. Default 10, as Bun.
        broker: shares topics with other processes (``RedisBroker``, or any
            :class:`~aiohttp_upgrade.broker.Broker`); None (default) keeps pub/sub
            in this process, at no cost. :meth:`setup` starts it when the app
            starts and closes it at cleanup.

    Raises:
        InvalidOptionError: ``handshake_timeout`` is not None or a finite number > 0.
        TypeError: ``broker`` is not a Broker.
    """

    def __init__(
        self,
        websocket_handler: WebSocketHandler[DataT],
        *,
        allowed_origins: Iterable[str] | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        broker: Broker | None = None,
    ) -> None:
        if not isinstance(websocket_handler, WebSocketHandler):
            raise TypeError("Server() needs a WebSocketHandler instance")
        if broker is not None and not isinstance(broker, Broker):
            raise TypeError(f"broker must be a Broker, got {type(broker).__name__}")
        if handshake_timeout is not None and (
            isinstance(handshake_timeout, bool)
            or not isinstance(handshake_timeout, int | float)
            or not (math.isfinite(handshake_timeout) and handshake_timeout > 0)
        ):
            raise InvalidOptionError(
                "handshake_timeout",
                f"must be a number of seconds > 0 or None, got {handshake_timeout!r}",
            )
        self.handshake_timeout = handshake_timeout
        if websocket_handler._server is not None:
            raise InvalidStateError("this handler already serves another Server")
        websocket_handler._server = self
        self.websocket_handler = websocket_handler
        self.options = websocket_handler.options
        self.allowed_origins = (
            None if allowed_origins is None else tuple(allowed_origins)
        )
        self.broker: Broker = LocalBroker() if broker is None else broker
        remote = self.broker.remote
        # None unless there is something to tell: the hot paths test only these.
        self._relay = self.broker.publish if remote else None
        self._interest = self.broker.subscription if remote else None
        hooks = hook_table(websocket_handler)
        self._subscription_hook = hooks[Kind.SUBSCRIPTION] is not None
        watch = self._interest is not None or self._subscription_hook
        self._topics: TopicRegistry[ServerWebSocket[DataT]] = TopicRegistry(
            self._subscription_changed if watch else None
        )
        # The open sockets, in order, each with its connection (which runs its hooks).
        self._sockets: dict[ServerWebSocket[DataT], Connection] = {}
        self._leaving: dict[ServerWebSocket[DataT], Connection] = {}  # in _forget
        # Tasks running async hooks, closed sockets' included until close ends.
        self._tasks: set[asyncio.Task[None]] = set()
        self._context = SocketContext(
            options=self.options,
            hooks=hooks,
            flusher=Flusher(),
            topics=self._topics,
            publish=self._publish_frame,
            forget=self._forget,
            tasks=self._tasks,
            mask=compiled_mask or xor_mask,
        )
        self._shutting_down = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_loop: asyncio.AbstractEventLoop | None = None
        self._app: web.Application | None = None
        self._started = False
        self._warned: set[str] = set()  # what was logged once already

    def _warn_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)

    # -- the request-handler adapter ---------------------------------------------

    def handler(
        self, fetch: Fetch[DataT]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wrap ``fetch(request, server)`` into an aiohttp request handler.

        Args:
            fetch: a plain function or a coroutine function, Bun's ``fetch(req,
                server)``. It calls :meth:`upgrade` and returns None to upgrade, or
                returns a response (which is sent as usual).

        Returns:
            An ordinary aiohttp handler for ``router.add_get``, a ``RouteTableDef``
            or a sub-application; middlewares run around it as around any handler.
            Before calling ``fetch`` it answers 403 to a WebSocket handshake whose
            ``Origin`` fails ``allowed_origins``. After ``fetch``: an upgraded
            request gets its 101, the socket takes the connection over from
            aiohttp and ``open`` is dispatched, and the handler returns at once,
            not when the socket closes (the access log and middlewares see a
            request that ended at the 101); a request :meth:`upgrade`
            refused for its ``Sec-WebSocket-Version`` gets 426 whatever ``fetch``
            returned; ``fetch`` returning None without upgrading, or anything that
            is not a response (such as ``upgrade()``'s False), gets 500 (and a log
            line saying why). An exception from ``fetch`` propagates to aiohttp
            like any handler's. A client that leaves before its 101 is written
            is logged at debug, and the handler returns normally.

            So a middleware cannot scope a resource or a concurrency limit to a
            socket: what it opens around the handler closes right after the 101,
            and a limit on requests in flight counts handshakes, not open
            sockets. Acquire per-socket resources in ``open`` and release them in
            ``close``; bound open sockets in ``fetch`` with
            :attr:`pending_websockets`.

        Raises:
            TypeError: ``fetch`` is not callable.
        """
        if not callable(fetch):
            raise TypeError(
                f"server.handler() needs a fetch(request, server) function, got {fetch!r}"
            )

        async def handle(request: web.Request) -> web.StreamResponse:
            # The Origin check takes every request that lists websocket on any
            # Upgrade line, a superset of what check_handshake() accepts, and
            # upgrade() only takes requests that passed here: no upgrade skips it.
            if (
                self.allowed_origins is not None
                and wants_websocket(request.headers)
                and not origin_allowed(request, self.allowed_origins)
            ):
                logger.info(
                    "WebSocket handshake refused: Origin %s",
                    ", ".join(request.headers.getall("Origin", [])),
                )
                return web.Response(status=403, text="Origin not allowed")
            request[_ADAPTER_KEY] = self
            result: object = fetch(request, self)
            if inspect.isawaitable(result):
                result = await result
            upgrade = request.get(_UPGRADE_KEY)
            if isinstance(upgrade, _Upgrade):
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
                        "fetch upgraded %s and also returned %r; the response is "
                        "ignored",
                        request.path,
                        result,
                    )
                if self._app is None:
                    self._warn_once(
                        "no-setup",
                        "%s was upgraded by a Server whose setup(app) was never "
                        "called: app shutdown will not close its sockets with 1001 "
                        "and handshake_timeout does not apply; call "
                        "server.setup(app) on the root application",
                        request.path,
                    )
                return await self._serve(request, upgrade)
            if upgrade == _WRONG_VERSION:
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
                    "fetch for %s returned %r, which is not a response",
                    request.path,
                    result,
                )
            return web.Response(status=500, text="Internal Server Error")

        return handle

    @overload
    def upgrade(
        self: Server[_T | None],
        request: web.BaseRequest,
        *,
        data: _T | None = None,
        headers: Headers | None = None,
    ) -> bool: ...

    @overload
    def upgrade(
        self,
        request: web.BaseRequest,
        *,
        data: DataT,
        headers: Headers | None = None,
    ) -> bool: ...

    def upgrade(
        self,
        request: web.BaseRequest,
        *,
        data: Any = None,
        headers: Headers | None = None,
    ) -> bool:
        """Upgrade ``request`` once ``fetch`` returns; False if it cannot be upgraded.

        Synchronous, as in Bun: nothing is sent yet. When ``fetch`` then returns
        None, the 101 response goes out, the socket is created with ``ws.data =
        data``, the ``open`` hook runs and frames are dispatched until it closes.
        (A handshake from an ``Origin`` that ``allowed_origins`` refuses never
        reaches ``fetch``: the adapter answers 403.)

        Args:
            request: the request ``fetch`` received.
            data: becomes ``ws.data``; it may be left out only when the server's
                data type admits None (type checkers enforce it).
            headers: a mapping or (name, value) pairs added to the 101 response.
                Handshake headers in it (such as ``Upgrade``, ``Connection``,
                ``Sec-WebSocket-Accept``, ``Sec-WebSocket-Extensions``) are ignored;
                ``Sec-WebSocket-Protocol`` picks the subprotocol (otherwise the
                client's first offer is taken).

        Returns:
            True if the request will be upgraded. False, doing nothing, when it is
            not a valid WebSocket handshake (HTTP/1.1 or later, RFC 6455 4.1; a
            wrong or missing ``Sec-WebSocket-Version`` is then answered 426
            whatever ``fetch`` returns), was already upgraded, or the server is
            shutting down.

        Raises:
            InvalidStateError: ``request`` did not come through :meth:`handler`.
            TypeError: a header name or value is not a str (the message names it).
            ValueError: a header name is not an HTTP token, or a value contains
                CR, LF or NUL.
        """
        if request.get(_ADAPTER_KEY) is not self:
            raise InvalidStateError(
                "upgrade() needs a request routed through this server's handler()"
            )
        extra = _checked_headers(headers)
        if self._shutting_down or request.get(_UPGRADE_KEY) is not None:
            return False
        decision = check_handshake(
            request.method,
            request.headers,
            self.options.per_message_deflate,
            (request.version.major, request.version.minor),
        )
        if not isinstance(decision, Accept):
            if decision.status == 426:
                request[_UPGRADE_KEY] = _WRONG_VERSION
            logger.debug("WebSocket handshake refused: %s", decision.reason)
            return False
        if not reads_as_upgrade(request):
            # check_handshake() follows aiohttp's rule; this is the safety net
            # should an aiohttp release change it.
            logger.debug(
                "WebSocket handshake refused: aiohttp reads on as HTTP after it"
            )
            return False
        request[_UPGRADE_KEY] = _Upgrade(decision, data, extra)
        return True

    async def _serve(
        self, request: web.Request, upgrade: _Upgrade
    ) -> web.StreamResponse:
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
        connection = Connection(
            transport,
            self._context,
            cast(DataT, upgrade.data),
            subprotocol,
            request.remote or "",
            upgrade.accept.deflate,
        )
        ws: ServerWebSocket[DataT] = connection.ws
        # From here on the socket owns the transport; the request ends now.
        tail = take_over(request, connection)
        # Pause the protocol whenever a byte is buffered, so that "resumed" means
        # "empty": the drain hook relies on it.
        transport.set_write_buffer_limits(high=0)
        self._sockets[ws] = connection
        self._start_idle_timer()
        connection.dispatcher.dispatch(Kind.OPEN)
        if tail:
            connection.data_received(tail)
        return response

    # -- pub/sub ----------------------------------------------------------------

    def publish(
        self,
        topic: str,
        message: str | bytes | bytearray | memoryview,
        compress: bool = False,
    ) -> int:
        """Send ``message`` to every subscriber of ``topic``; return the worst code.

        Never awaits and never blocks on a slow subscriber: the frame is built once
        (and deflated once, where it can be shared) and queued on every subscriber;
        a subscriber over its ``backpressure_limit`` misses it, the others do not.
        With a broker, the message is also queued for the other processes, which
        deliver it to all their subscribers of ``topic`` (at most once; see the
        scaling guide).

        Args:
            topic: a non-empty string.
            message: ``str`` is sent as a text frame, bytes-like as binary.
            compress: deflate it for subscribers that negotiated
                permessage-deflate.

        Returns:
            Delivery on this process only. The payload length if every local
            subscriber took it at once, -1 if any was backpressured (queued; its
            ``drain`` follows), 0 if any dropped it or nobody here is subscribed.

        Raises:
            TypeError: ``topic`` is not a str, or ``message`` not str or bytes-like.
            ValueError: ``topic`` is empty or not valid UTF-8 (a lone surrogate).
        """
        topic = check_topic(topic)
        opcode, payload = _payload(message)
        return self._publish_frame(topic, opcode, payload, compress, message, None)

    def _publish_frame(
        self,
        topic: str,
        opcode: int,
        payload: bytes,
        compress: bool,
        message: object,
        sender: ServerWebSocket[DataT] | None,
        relay: bool = True,
    ) -> int:
        """Fan a message out to ``topic`` here, the frame built once for all
        sockets, and (``relay``) hand it to the broker for the other processes."""
        relay_to = self._relay
        if relay_to is not None and relay:
            relay_to(topic, opcode, payload, compress)
        subscribers = self._topics.subscribers(topic)
        if not subscribers:
            return 0
        skip = None if self.options.publish_to_self else sender
        length = len(payload)
        frame = build_frame(opcode, payload)
        shared: dict[tuple[int, int], bytes] | None = (
            {} if compress and length else None
        )
        delivered = dropped = queued = False
        # A snapshot: a subscriber closed by its backpressure limit leaves mid-loop.
        for ws in tuple(subscribers):
            if ws is skip or ws.ready_state is not _OPEN:
                continue
            delivered = True
            outbox = ws._outbox
            if shared is None or outbox.compressor is None:
                code = outbox.enqueue(frame, length, message)
            else:
                code = outbox.send(opcode, payload, True, message, frame, shared)
            if code <= 0:
                if code:
                    queued = True
                else:
                    dropped = True
        if not delivered or dropped:
            return 0
        return -1 if queued else length

    def deliver(self, topic: str, opcode: int, payload: bytes, compress: bool) -> int:
        """Fan out a message that another process published (called by the
        broker): to every local subscriber of ``topic``, on the same encode-once
        path as :meth:`publish`, and not relayed again. Returns the publish code."""
        # What a dropped hook gets: the message as publish() was given it.
        message = payload.decode(errors="replace") if opcode == OP_TEXT else payload
        return self._publish_frame(
            topic, opcode, payload, compress, message, None, relay=False
        )

    def subscriber_count(self, topic: str) -> int:
        """How many sockets of this process are subscribed to ``topic`` right now
        (Bun's ``subscriberCount``).

        Raises:
            TypeError: ``topic`` is not a str.
            ValueError: ``topic`` is empty or not valid UTF-8 (a lone surrogate).
        """
        return self._topics.count(check_topic(topic))

    async def cluster_subscriber_count(self, topic: str) -> int:
        """How many sockets are subscribed to ``topic`` on every live process.

        Without a broker, the same as :meth:`subscriber_count`. With one, this
        process's count now plus the other processes' as last reported (a
        process that died without cleaning up drops out within the broker's
        expiry time, three heartbeats for ``RedisBroker``).

        Raises:
            BrokerUnavailableError: the broker cannot reach its backend.
            InvalidStateError: the broker is not started (before app startup).
        """
        topic = check_topic(topic)
        if not self.broker.remote:
            return self._topics.count(topic)
        return await self.broker.cluster_count(topic)

    def local_counts(self) -> dict[str, int]:
        """A snapshot of the topics with subscribers on this process, and how many."""
        return self._topics.counts()

    # Called by ServerWebSocket.subscribe/unsubscribe and by forget().

    # The topic registry's transition callback (subscribe, unsubscribe, and each
    # topic a closing socket leaves), set only when a broker or hook listens.

    def _subscription_changed(
        self, ws: ServerWebSocket[DataT], topic: str, new: int, old: int
    ) -> None:
        """Tell the broker, then dispatch the handler's ``subscription`` hook to
        the socket, in order with its other hooks."""
        interest = self._interest
        if interest is not None:
            interest(topic, new, old)
        if self._subscription_hook:
            connection = self._sockets.get(ws) or self._leaving.get(ws)
            if connection is not None:
                connection.dispatcher.subscription(topic, new, old)

    # -- lifecycle --------------------------------------------------------------

    @property
    def pending_websockets(self) -> int:
        """Number of open sockets of this server (Bun's ``pendingWebSockets``).

        A socket counts from its 101 until it closes (it no longer counts when its
        ``close`` hook runs).
        """
        return len(self._sockets)

    def _forget(self, ws: ServerWebSocket[DataT]) -> None:
        """Drop a closing socket from the registry and every topic (the registry's
        transition callback runs the ``subscription`` hook for each topic left)."""
        connection = self._sockets.pop(ws, None)
        if connection is None:
            self._topics.unsubscribe_all(ws)
            return
        # Where _subscription_changed finds the socket's hooks meanwhile.
        self._leaving[ws] = connection
        try:
            self._topics.unsubscribe_all(ws)
        finally:
            del self._leaving[ws]

    def setup(
        self,
        app: web.Application,
        *,
        key: web.AppKey[Server[DataT]] | None = None,
    ) -> None:
        """Register the server on ``app``: graceful shutdown, ``handshake_timeout``,
        the server stored on the app, and the broker, started with the app (it
        connects eagerly; an unreachable backend is logged and retried, and the app
        starts anyway) and closed at cleanup.

        Pass the root application (the one given to ``web.run_app`` or
        ``AppRunner``, or returned by the factory of ``python -m aiohttp.web``),
        before it starts, even when the route is in a sub-application: aiohttp
        reads the keep-alive timeout that carries ``handshake_timeout`` from the
        root only, and handlers in every sub-application find the server as
        ``request.config_dict[SERVER_KEY]``. On the app's shutdown it runs
        :meth:`shutdown` (1001 to every socket). A sub-application is
        accepted only with ``handshake_timeout=None``. Create one Server per
        application (in an app factory, say): shutting an app down closes its
        server for good.

        Several Servers, each with its own handler and routes, may share one app:
        the first one set up is ``app[SERVER_KEY]``, and every further one needs
        its own ``key`` (it is stored under that key only). Shutdown closes the
        sockets of each. The app has one handshake deadline, the shortest
        ``handshake_timeout`` among them.

        Args:
            app: the root application.
            key: your own typed key, ``web.AppKey("chat", Server[Session])``:
                ``app[key]`` (and ``request.config_dict[key]``) is then this server,
                typed. The first server on an app is also ``app[SERVER_KEY]``.

        Raises:
            InvalidStateError: called twice; ``app`` is already frozen or a
                sub-application; ``app`` has a Server at ``SERVER_KEY`` already and
                no ``key`` is given, or ``key`` is taken; or, at startup, ``app``
                turned out to be a sub-application while ``handshake_timeout`` is
                set.
        """
        from . import SERVER_KEY

        if self._app is not None:
            raise InvalidStateError(
                "this Server is already set up on an application; create one Server "
                "per application (for example in the app factory)"
            )
        if app.pre_frozen:
            raise InvalidStateError(
                "setup() needs an application that has not started and is not a "
                "sub-application: pass the root application, before it starts"
            )
        if key is None and SERVER_KEY in app:
            raise InvalidStateError(
                "this application already has a Server at SERVER_KEY; set up each "
                "further Server with its own key: server.setup(app, key=web.AppKey("
                "'name', Server[...]))"
            )
        if key is not None and key in app:
            raise InvalidStateError(
                f"this application already has {key!r}; give each Server its own key"
            )
        self._app = app
        servers = (*app.get(_SERVERS_KEY, ()), self)
        app[_SERVERS_KEY] = servers
        if SERVER_KEY not in app:
            app[SERVER_KEY] = self
        if key is not None:
            app[key] = self
        timeouts = [s.handshake_timeout for s in servers if s.handshake_timeout]
        if timeouts:
            set_keepalive_timeout(app, min(timeouts))
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, app: web.Application) -> None:
        # On its first start the root app is not frozen yet, while add_subapp()
        # froze a sub-app at once; aiohttp ignores a sub-app's keep-alive timeout.
        first_start, self._started = not self._started, True
        if first_start and app.pre_frozen and self.handshake_timeout is not None:
            raise InvalidStateError(
                "server.setup() was given a sub-application, where handshake_timeout "
                "cannot apply: pass the root application (or handshake_timeout=None)"
            )
        # A server object may outlive one app run (tests, in-process restarts).
        self._shutting_down = False
        await self.broker.start(self)

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.broker.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.shutdown()

    async def shutdown(
        self, code: int = GOING_AWAY, reason: str = "server shutdown"
    ) -> None:
        """Refuse new upgrades, close every socket with ``code``, wait for close hooks.

        Each client gets a Close frame and then its connection is closed at once,
        without waiting for the client's answer, so that clients cannot delay the
        shutdown; the close hooks are awaited for at most 5 seconds. :meth:`setup`
        calls it (with 1001) when the app shuts down; call it yourself to close
        everything earlier. From then on :meth:`upgrade` returns False until the
        app is started again.

        Args:
            code: the close code sent to every client (and seen by ``close``).
            reason: the close reason, cut to 123 bytes.

        Raises:
            ValueError: ``code`` is not a close code an endpoint may send.
        """
        check_close_code(code)
        self._shutting_down = True
        frame = build_close_frame(code, reason)
        for connection in list(self._sockets.values()):
            connection.shutdown(code, reason, frame)
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _start_idle_timer(self) -> None:
        timeout = self.options.idle_timeout
        if not timeout:
            return
        loop = asyncio.get_running_loop()
        if self._idle_timer is None or self._idle_loop is not loop:
            self._idle_loop = loop
            self._idle_timer = loop.call_later(timeout / IDLE_TICKS, self._idle_sweep)

    def _idle_sweep(self) -> None:
        self._idle_timer = None
        ping_tick = PING_TICK if self.options.send_pings else 0
        for connection in list(self._sockets.values()):
            connection.idle_tick(ping_tick, IDLE_TICKS)
        if self._sockets:
            self._start_idle_timer()
