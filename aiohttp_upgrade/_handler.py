"""``WebSocketHandler``: the class users subclass to handle sockets, Bun's ``websocket:`` object."""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._deflate import PerMessageDeflate
from ._errors import InvalidStateError
from ._hooks import HOOK_NAMES, HOOKS, SERVER_HOOK_NAMES, Hook, HookTable
from ._lifecycle import bound_server
from ._options import (
    DEFAULT_BACKPRESSURE_LIMIT,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PAYLOAD_LENGTH,
    DEFAULT_MAX_PRESENCE_META_LENGTH,
    DEFAULT_SHUTDOWN_TIMEOUT,
    OPTION_NAMES,
    OPTIONS,
    Options,
    options_doc,
)
from ._presence import PresenceHook
from ._ratelimit import RateLimit

if TYPE_CHECKING:
    from ._server import Server
    from ._websocket import ServerWebSocket

__all__ = ["HOOK_NAMES", "WebSocketHandler", "hook_table"]

DataT = TypeVar("DataT")

_OPTION_NAMES = OPTION_NAMES


def _normalise(name: str) -> str:
    """``onMessage``, ``on_message`` -> ``message``; ``idleTimeout`` -> ``idletimeout``."""
    name = name.lower()
    for prefix in ("on_", "on"):
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    return name.replace("_", "")


_HOOKS = (*HOOK_NAMES, *SERVER_HOOK_NAMES)
_BY_NORMAL_FORM = {_normalise(name): name for name in (*_OPTION_NAMES, *_HOOKS)}
_KNOWN = frozenset((*_OPTION_NAMES, *_HOOKS, "options", "hooks", "server"))


def _meant(name: str, value: object) -> str | None:
    """The option or hook ``name`` probably misspells, or None.

    Two kinds of slip are recognised: another spelling of the same words (Bun's
    camelCase ``idleTimeout``, a DOM-style ``onmessage`` or ``on_open``), and a
    typo of a letter or two (``idle_timout``, ``mesage``). Short hook names are
    matched by typo only for a method taking the hook's arguments, and never by a
    name that starts with a hook's name (``messages``, ``closed``, ``open_room``):
    those are ordinary helpers.
    """
    if name in _KNOWN or name.startswith("_"):
        return None
    normal = _normalise(name)
    if normal in _BY_NORMAL_FORM:
        return _BY_NORMAL_FORM[normal]
    close = difflib.get_close_matches(name, _OPTION_NAMES, n=1, cutoff=0.85)
    if close:
        return close[0]
    if not inspect.isfunction(value):
        return None
    arity = _positional_count(value)
    hooks = [
        spec.name
        for spec in HOOKS
        if not name.startswith(spec.name) and arity == spec.arity + 1  # self
    ]
    close = difflib.get_close_matches(name, hooks, n=1, cutoff=0.75)
    return close[0] if close else None


def _positional_count(function: Callable[..., Any]) -> int | None:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in kinds)


def _near_misses(cls: type) -> Iterator[tuple[str, str]]:
    """(name, meant) for each name a subclass of WebSocketHandler defines by mistake.

    A name whose intended option or hook the subclass defines as well is a helper
    on purpose (``message`` calling ``on_message``), so it does not count.
    """
    defined: dict[str, object] = {}
    for klass in cls.__mro__:
        if klass is WebSocketHandler:
            break
        for name, value in vars(klass).items():
            defined.setdefault(name, value)
    for name, value in defined.items():
        meant = _meant(name, value)
        if meant is not None and meant not in defined:
            yield name, meant


class WebSocketHandler(Generic[DataT]):
    """Handles the sockets of one :class:`~aiohttp_upgrade.Server`.

    Subclass it and override the hooks you need; each may be a plain method or a
    coroutine, and a hook you do not override costs nothing. Messages of one socket
    are dispatched in order: an ``async def message`` is awaited before the next
    message of that socket is dispatched (Bun does not wait; this gives inbound
    backpressure).

    Options are class attributes, or keyword arguments of the constructor that
    override them; they are validated when the handler is created. Defaults are
    Bun's:

    {options}

    A subclass attribute or method whose name nearly matches an option or hook
    (``idle_timout``, ``on_message``, ``onOpen``, ``maxPayloadLength``) is ignored
    and gets a ``UserWarning`` naming what was probably meant.

    Raises:
        InvalidOptionError: an option is out of range (a ``ValueError`` naming it).
        TypeError: an unknown keyword argument.
    """

    # The options (OPTIONS), declared for type checkers; checked below the class.
    max_payload_length: int = DEFAULT_MAX_PAYLOAD_LENGTH
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_lifetime: float = 0
    backpressure_limit: int = DEFAULT_BACKPRESSURE_LIMIT
    close_on_backpressure_limit: bool = False
    per_message_deflate: bool | PerMessageDeflate = False
    send_pings: bool = True
    ping_interval: float = 0
    publish_to_self: bool = False
    reset_idle_timeout_on_send: bool = True
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    shutdown_drain: float = 0
    rate_limit: RateLimit | None = None
    max_presence_meta_length: int = DEFAULT_MAX_PRESENCE_META_LENGTH

    @property
    def server(self) -> Server[DataT]:
        """The :class:`~aiohttp_upgrade.Server` this handler serves, for hooks that
        need ``server.publish`` (in ``close`` the socket has already left its topics,
        as in Bun). InvalidStateError before ``Server(handler)`` was created."""
        server: Server[DataT] | None = bound_server(self)
        if server is None:
            raise InvalidStateError("this handler is not attached to a Server yet")
        return server

    def __init__(self, **options: Any) -> None:
        for name, meant in _near_misses(type(self)):
            kind = "option" if meant in _OPTION_NAMES else "hook"
            warnings.warn(
                f"{type(self).__name__}.{name} is not an option or hook of "
                f"WebSocketHandler and is ignored; did you mean the {kind} '{meant}'?",
                UserWarning,
                stacklevel=2,
            )
        values = {name: getattr(self, name) for name in _OPTION_NAMES}
        values.update(options)
        self.options = Options.from_values(values)
        for name in _OPTION_NAMES:
            if name in options:
                setattr(self, name, options[name])

    def open(self, ws: ServerWebSocket[DataT]) -> Awaitable[None] | None:
        """Called once the socket is open, before any message is dispatched.

        If it raises, ``error`` is called and the socket closed with 1011.
        """

    def message(
        self, ws: ServerWebSocket[DataT], message: str | bytes
    ) -> Awaitable[None] | None:
        """Called for each message: ``str`` for a text frame, ``bytes`` for binary.

        Messages of one socket arrive in order; an ``async def message`` is awaited
        before the next one of that socket is dispatched (the socket stops being
        read while messages queue up).
        """

    def close(
        self, ws: ServerWebSocket[DataT], code: int, reason: str
    ) -> Awaitable[None] | None:
        """Called exactly once when the socket is closed; ``ws`` no longer sends.

        ``code`` is the client's close code (1005 if its Close had none), yours
        from ``ws.close(code)``, 1006 when the connection was lost, aborted
        (``terminate()``, idle timeout, ``close_on_backpressure_limit``), 1011 when
        a hook raised, 1009/1002/1007 for a client's oversized or invalid frames,
        1001 on shutdown and at ``max_lifetime``. The socket has already left its
        topics: publish with ``self.server.publish``. An async ``close`` runs to
        its end even when the connection is already gone (on shutdown: for at
        most 5 seconds).
        """

    def drain(self, ws: ServerWebSocket[DataT]) -> Awaitable[None] | None:
        """Called when the write buffer has emptied after a send returned -1.

        Runs once per backpressure episode, with ``ws.get_buffered_amount() == 0``:
        the time to send more (see the flow control guide).
        """

    def rate_limited(self, ws: ServerWebSocket[DataT]) -> Awaitable[None] | None:
        """Called when ``ws`` sent more than its ``rate_limit`` allows (every frame
        and byte counts, pings and continuations included). Until its budget is
        back the socket is not read (what it sends waits in TCP); it runs once per
        such episode. Without this hook the socket is closed with 1008 instead;
        call ``ws.close(1008)`` here to do both."""

    def dropped(
        self, ws: ServerWebSocket[DataT], message: str | bytes
    ) -> Awaitable[None] | None:
        """Called when a send or publish to ``ws`` dropped ``message`` (it returned 0)
        because the client was behind by more than ``backpressure_limit`` bytes:
        resynchronise that client later. ``message`` is what the ``message`` hook
        would get: ``str`` for text, ``bytes`` for binary (a ``bytearray`` or
        ``memoryview`` you sent arrives as a ``bytes`` copy). Not called with
        ``close_on_backpressure_limit`` (the socket is closed instead), nor for a
        message dropped by this hook itself, plain or async. A plain ``dropped``
        runs inside the ``send`` or ``publish`` call."""

    def ping(self, ws: ServerWebSocket[DataT], data: bytes) -> Awaitable[None] | None:
        """Called for each ping from the client, after the pong has been sent."""

    def pong(self, ws: ServerWebSocket[DataT], data: bytes) -> Awaitable[None] | None:
        """Called for each pong from the client (an answer to ``ws.ping()`` or an
        idle-timeout ping, or unsolicited)."""

    def error(
        self, ws: ServerWebSocket[DataT], exc: BaseException
    ) -> Awaitable[None] | None:
        """Called when another hook raised, with that exception; the socket is then
        closed with 1011 (``close`` follows) and the traceback logged once on the
        ``aiohttp_upgrade`` logger. Other sockets are not affected. If ``error``
        itself raises, that is logged too."""

    def subscription(
        self, ws: ServerWebSocket[DataT], topic: str, new_count: int, old_count: int
    ) -> Awaitable[None] | None:
        """Called when ``ws`` subscribed to ``topic`` (``new_count > old_count``) or
        unsubscribed, also for each topic it leaves when it closes (before
        ``close``); the counts are this process's subscribers of ``topic`` after
        and before. It runs like the other hooks of ``ws``, one at a time and in
        order: a plain hook is called from ``subscribe``/``unsubscribe`` when none
        of them is running or queued, otherwise (and when it is async) it runs
        after them; shutdown waits for it. If it raises, ``error`` gets the
        exception and an open socket is closed with 1011, as for any hook."""

    def presence(
        self, topic: str, joins: dict[str, list[Any]], leaves: dict[str, list[Any]]
    ) -> Awaitable[None] | None:
        """Called when members of ``topic`` joined, left or changed their meta, on
        any process (``ws.track``, ``untrack``, ``update_presence``, a close, a
        dead process): ``joins`` and ``leaves`` map each key to the metas that
        came or went (an update is its old meta in ``leaves``, its new one in
        ``joins``). Called once per topic per batch (changes within 50 ms), for
        the whole server, not per socket, and on every process: send the news
        to this process's clients with ``self.server.presence.publish_local``.
        An async hook runs one diff at a time, in order. If it raises, the
        exception is logged; nothing is closed."""


def _document_options(doc: str | None) -> str | None:
    """``doc`` with its ``{options}`` line replaced by the option table."""
    if doc is None:  # python -OO
        return None
    for line in doc.splitlines():
        if line.strip() == "{options}":
            indent = line[: len(line) - len(line.lstrip())]
            return doc.replace(line, options_doc(indent))
    raise RuntimeError("WebSocketHandler's docstring has no {options} line")


def _check_class_options() -> None:
    """The class attributes must be the option table's names and defaults."""
    declared = {
        name: getattr(WebSocketHandler, name)
        for name in WebSocketHandler.__annotations__
        if not name.startswith("_")
    }
    table = {spec.name: spec.default for spec in OPTIONS}
    if declared != table:
        raise RuntimeError(f"WebSocketHandler options {declared} != OPTIONS {table}")


WebSocketHandler.__doc__ = _document_options(WebSocketHandler.__doc__)
_check_class_options()


def hook_table(handler: WebSocketHandler[Any]) -> HookTable:
    """``handler``'s hooks by :class:`~aiohttp_upgrade._hooks.Kind`, each as
    ``(function, is_coroutine_function)``; None for a hook it does not override
    (in its class or on the instance), which is then never called."""
    table: list[tuple[Hook, bool] | None] = []
    for name in HOOK_NAMES:
        function = getattr(handler, name)
        if getattr(function, "__func__", None) is getattr(WebSocketHandler, name):
            table.append(None)
        else:
            table.append((function, inspect.iscoroutinefunction(function)))
    return tuple(table)


def presence_hook(handler: WebSocketHandler[Any]) -> tuple[PresenceHook | None, bool]:
    """``handler``'s ``presence`` hook and whether it is a coroutine function;
    (None, False) when it does not override it."""
    function = handler.presence
    if getattr(function, "__func__", None) is WebSocketHandler.presence:
        return None, False
    return function, inspect.iscoroutinefunction(function)
