"""``Server``: the public object that gives aiohttp request handlers Bun's
``server.upgrade()``: a facade over the HTTP adapter (:mod:`._adapter`: the request
handler, ``upgrade()``, the 101, the take-over), the pub/sub hub (:mod:`._hub`), the
lifecycle (:mod:`._lifecycle`: open sockets, timers, shutdown), history and presence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar, overload

from aiohttp import web

from ._adapter import Headers, HttpAdapter, check_handshake_timeout
from ._broker import Broker, LocalBroker
from ._closecode import CloseCode, check_close_code
from ._errors import InvalidStateError
from ._frames import OP_TEXT
from ._handler import WebSocketHandler, hook_table, presence_hook
from ._history import History
from ._hooks import Kind
from ._hub import Hub
from ._lifecycle import Lifecycle, bind, install
from ._payloads import message_payload as _payload
from ._presence import PresenceTable
from ._presence_api import Presence
from ._server_ops import ServerOps
from ._topics import check_topic
from ._websocket import ServerWebSocket

__all__ = ["Fetch", "Server"]

DataT = TypeVar("DataT")
_T = TypeVar("_T")

GOING_AWAY: Final = CloseCode.GOING_AWAY
# Seconds a connection gets to send a complete request head before it is closed:
# uWebSockets' HTTP idle timeout, which Bun inherits.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

Fetch = Callable[
    [web.Request, "Server[DataT]"],
    Awaitable[web.StreamResponse | None] | web.StreamResponse | None,
]


class Server(ServerOps[DataT]):
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
            :class:`~aiohttp_upgrade._broker.Broker`); None (default) keeps pub/sub
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
        self.handshake_timeout = check_handshake_timeout(handshake_timeout)
        bind(websocket_handler, self)
        self.websocket_handler = websocket_handler
        self.options = options = websocket_handler.options
        self.allowed_origins = (
            None if allowed_origins is None else tuple(allowed_origins)
        )
        self.broker: Broker = LocalBroker() if broker is None else broker
        remote = self.broker.remote
        hooks = hook_table(websocket_handler)
        # None unless there is something to tell: the hot paths test only these.
        self._hub = Hub(
            relay=self.broker.publish if remote else None,
            interest=self.broker.subscription if remote else None,
            subscription_hook=hooks[Kind.SUBSCRIPTION] is not None,
            publish_to_self=options.publish_to_self,
        )
        self.history = History(self._hub, self.broker, options.backpressure_limit)
        """Topic history and resume (docs/history.rst)."""
        self._lifecycle = lifecycle = Lifecycle(options, self._hub)
        hook = presence_hook(websocket_handler)
        table = PresenceTable(*hook, lifecycle.tasks, options.max_presence_meta_length)
        self._hub.presence = table
        self.presence: Final = Presence(table, self._hub)
        """Who is here, on every process (see :class:`Presence`)."""
        self._http = HttpAdapter(
            self, self.allowed_origins, hooks, self._hub, lifecycle
        )
        self._app: web.Application | None = None
        self._started = False

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
        return self._http.handler(fetch)

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
        return self._http.upgrade(request, data, headers)

    # -- pub/sub ----------------------------------------------------------------

    def publish(
        self,
        topic: str,
        message: str | bytes | bytearray | memoryview,
        compress: bool = False,
        *,
        exclude: Iterable[ServerWebSocket[Any]] | None = None,
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
            exclude: sockets of this process that do not get it.

        Returns:
            Delivery on this process only. The payload length if every local
            subscriber took it at once, -1 if any was backpressured (queued; its
            ``drain`` follows), 0 if any dropped it or nobody here is subscribed.
            A topic with history through a broker: -1 when queued for Redis
            (delivered here too once Redis gave it its position), 0 if dropped.

        Raises:
            TypeError: ``topic`` is not a str, or ``message`` not str or bytes-like.
            ValueError: ``topic`` is empty or not valid UTF-8 (a lone surrogate).
        """
        topic = check_topic(topic)
        opcode, payload = _payload(message)
        dropped = message if opcode == OP_TEXT else payload  # as in ws.publish()
        return self._hub.publish(
            topic, opcode, payload, compress, dropped, None, exclude
        )

    def deliver(self, topic: str, opcode: int, payload: bytes, compress: bool) -> int:
        """Fan out a message that another process published (called by the
        broker): to every local subscriber of ``topic``, on the same encode-once
        path as :meth:`publish`, and not relayed again. Returns the publish code."""
        return self._hub.deliver(topic, opcode, payload, compress)

    def subscriber_count(self, topic: str) -> int:
        """How many sockets of this process are subscribed to ``topic`` right now
        (Bun's ``subscriberCount``).

        Raises:
            TypeError: ``topic`` is not a str.
            ValueError: ``topic`` is empty or not valid UTF-8 (a lone surrogate).
        """
        return self._hub.count(check_topic(topic))

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
            return self._hub.count(topic)
        return await self.broker.cluster_count(topic)

    def local_counts(self) -> dict[str, int]:
        """A snapshot of the topics with subscribers on this process, and how many."""
        return self._hub.counts()

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
        if self._app is not None:
            raise InvalidStateError(
                "this Server is already set up on an application; create one Server "
                "per application (for example in the app factory)"
            )
        install(app, self, key)
        self._app = app
        self._http.set_up = True
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
        self._lifecycle.shutting_down = False
        await self.broker.start(self)

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.broker.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.shutdown()

    async def shutdown(
        self,
        code: int = GOING_AWAY,
        reason: str = "server shutdown",
        *,
        drain: float | None = None,
    ) -> None:
        """Refuse new upgrades, close every socket with ``code``, wait for close hooks.

        Each client gets a Close frame and then its connection is closed at once,
        without waiting for the client's answer, so that clients cannot delay the
        shutdown; the close hooks are awaited for at most ``shutdown_timeout``
        seconds (a handler option, 5 by default). :meth:`setup`
        calls it (with 1001) when the app shuts down; call it yourself to close
        everything earlier. From then on :meth:`upgrade` returns False until the
        app is started again.

        Args:
            code: the close code sent to every client (and seen by ``close``).
            reason: the close reason, cut to 123 bytes.
            drain: seconds to spread the closes over (None: the handler's
                ``shutdown_drain``); upgrades are refused from the start.

        Raises:
            ValueError: ``code`` is not a close code an endpoint may send, or
                ``drain`` not a number of seconds >= 0.
        """
        check_close_code(code)
        await self._lifecycle.shutdown(code, reason, drain)
