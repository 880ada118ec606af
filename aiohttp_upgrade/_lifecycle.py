"""The lifecycle of a server's sockets: the registry of open sockets, the idle
sweep, shutdown, and the app hooks that :meth:`Server.setup` installs.

It acts on a socket only through :class:`~aiohttp_upgrade._hub.SocketPort`
(``shutdown`` and ``idle_tick``), and on its topics through the hub.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ._compat import set_keepalive_timeout
from ._drain import close_spread
from ._errors import InvalidStateError
from ._frames import build_close_frame
from ._hub import Hub, SocketPort
from ._lifetime import Aging
from ._options import check_drain

if TYPE_CHECKING:
    from ._options import Options

logger = logging.getLogger("aiohttp_upgrade")

__all__ = ["IDLE_TICKS", "PING_TICK", "Lifecycle", "bind", "bound_server", "install"]

# The idle timer advances in ticks of idle_timeout / IDLE_TICKS; pings go out
# at PING_TICK of them, so a socket closes between 7/8 and 8/8 of idle_timeout.
IDLE_TICKS: Final = 8
PING_TICK: Final = 6

# Every Server set up on an app, in order: they share its handshake deadline.
_SERVERS_KEY: Final = web.AppKey("aiohttp_upgrade.servers", tuple)

# The link between a handler and its server, kept here rather than on the handler
# (``handler.server`` reads it): by the handler's id, since a handler may define
# __eq__ and be unhashable; the entry goes with the handler, and the server is
# held weakly so that the link keeps neither alive.
_BOUND: dict[int, weakref.ref[Any]] = {}


def bind(handler: object, server: object) -> None:
    """Attach ``handler`` to ``server`` for good; InvalidStateError if it serves
    another server already."""
    key = id(handler)
    if bound_server(handler) is not None:
        raise InvalidStateError("this handler already serves another Server")
    _BOUND[key] = weakref.ref(server)
    weakref.finalize(handler, _BOUND.pop, key, None)


def bound_server(handler: object) -> Any:
    """The server ``handler`` serves, or None."""
    ref = _BOUND.get(id(handler))
    return None if ref is None else ref()


class Lifecycle:
    """The open sockets of one server, their idle sweep and their shutdown.

    Args:
        options: the handler's options (``idle_timeout``, ``send_pings``,
            ``shutdown_timeout``).
        hub: where a closing socket leaves its topics.
    """

    __slots__ = (
        "_aging",
        "_hub",
        "_idle_loop",
        "_idle_timer",
        "_options",
        "closing",
        "open",
        "shutting_down",
        "tasks",
    )

    def __init__(self, options: Options, hub: Hub) -> None:
        self._options = options
        self._hub = hub
        self.open: dict[SocketPort, None] = {}
        """The open sockets, in order of their 101."""
        self.tasks: set[asyncio.Task[None]] = set()
        """Tasks running async hooks, closed sockets' included until close ends."""
        self.closing: set[SocketPort] = set()
        """Sockets closed on our side whose connection is not gone yet."""
        self.shutting_down = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_loop: asyncio.AbstractEventLoop | None = None
        self._aging: Aging[SocketPort] = Aging(options)  # max_lifetime, ping_interval

    def add(self, port: SocketPort) -> None:
        """Register a socket after its 101 (its idle timer starts)."""
        self.open[port] = None
        self._start_idle_timer()
        self._aging.add(port)

    def forget(self, port: SocketPort) -> None:
        """Drop a closing socket from the registry and from every topic (the
        ``subscription`` hook runs for each topic left, before ``close``)."""
        self.open.pop(port, None)
        self._aging.forget(port)
        self.closing.add(port)
        self._hub.leave_all(port)

    def gone(self, port: SocketPort) -> None:
        """A socket's connection is lost: nothing is left to end."""
        self.closing.discard(port)

    async def shutdown(
        self, code: int, reason: str, drain: float | None = None
    ) -> None:
        """Close every socket with ``code`` without lingering, spread over ``drain``
        seconds (None: ``shutdown_drain``; _drain.py), then wait for the running
        hooks for at most ``shutdown_timeout`` seconds."""
        drain = check_drain(self._options.shutdown_drain if drain is None else drain)
        self.shutting_down = True
        frame = build_close_frame(code, reason)
        # Open sockets get the Close; closing ones (waiting for a client's Close
        # or FIN) are aborted first: no client holds the shutdown. One socket
        # failing must not keep the others open.
        ports = [*self.closing, *self.open]
        await close_spread(
            ports, drain, lambda port: port.shutdown(code, reason, frame)
        )
        current = asyncio.current_task()
        tasks = [task for task in self.tasks if task is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=self._options.shutdown_timeout)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._aging.stop()

    def _start_idle_timer(self) -> None:
        timeout = self._options.idle_timeout
        if not timeout:
            return
        loop = asyncio.get_running_loop()
        if self._idle_timer is None or self._idle_loop is not loop:
            self._idle_loop = loop
            self._idle_timer = loop.call_later(timeout / IDLE_TICKS, self._idle_sweep)

    def _idle_sweep(self) -> None:
        self._idle_timer = None
        ping_tick = PING_TICK if self._options.send_pings else 0
        for port in list(self.open):
            port.idle_tick(ping_tick, IDLE_TICKS)
        if self.open:
            self._start_idle_timer()


def install(app: web.Application, server: Any, key: web.AppKey[Any] | None) -> None:
    """The body of ``Server.setup``: store ``server`` on ``app``, set the shared
    handshake deadline, hook its startup, shutdown and cleanup (see there)."""
    from . import SERVER_KEY

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
    servers = (*app.get(_SERVERS_KEY, ()), server)
    app[_SERVERS_KEY] = servers
    if SERVER_KEY not in app:
        app[SERVER_KEY] = server
    if key is not None:
        app[key] = server
    timeouts = [s.handshake_timeout for s in servers if s.handshake_timeout]
    if timeouts:
        set_keepalive_timeout(app, min(timeouts))
