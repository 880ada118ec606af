"""Running a socket's hooks: in order, with a task only while there is async work.

An idle socket has no task. An event whose hook is a plain function is handled
by calling the hook at once, from ``data_received`` (or whatever produced the
event). An event whose hook is a coroutine function, or any event that arrives
while an earlier one is still being handled, goes into the socket's inbox, and a
task is created to work through it; the task ends when the inbox is empty. So the
hooks of one socket run one at a time, in the order of their events: an
``async def message`` is awaited before the next message of that socket is
dispatched. ``subscription`` is an event like the others (the server dispatches
it when the socket subscribes or unsubscribes, and for each topic a closing socket
leaves, before ``close``). When the inbox holds :data:`INBOX_HIGH_WATER` events,
reading from the client pauses until it is down to half (inbound backpressure).

A hook that raises (its own CancelledError included) is logged with its
traceback; the socket's queued events are dropped, the ``error`` hook gets the
exception and the socket is closed with 1011. ``close`` runs exactly once, last.
The ``error`` and ``close`` hooks run to completion: nothing cancels their task
when the connection is gone, and the server waits for them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._hooks import HOOK_NAMES, HOOKS, Hook, HookTable, Kind
from ._hub import Relayed
from ._pausing import INBOX as _INBOX

if TYPE_CHECKING:
    from ._websocket import ServerWebSocket, SocketContext

__all__ = ["INBOX_HIGH_WATER", "DispatchOwner", "Dispatcher", "HookTable", "Kind"]

logger = logging.getLogger("aiohttp_upgrade")

INBOX_HIGH_WATER: Final = 64
"""Queued events at which reading from the client pauses."""


_MESSAGE: Final = Kind.MESSAGE
_SUBSCRIPTION: Final = Kind.SUBSCRIPTION
_DROPPED: Final = Kind.DROPPED
_ERROR: Final = Kind.ERROR
_CLOSE: Final = Kind.CLOSE
# The kinds whose hook takes ``ws`` alone.
_WS_ONLY: Final = tuple(kind for kind, spec in enumerate(HOOKS) if spec.arity == 1)
_READY_OPEN: Final = 1  # ReadyState.OPEN


def _cancelling() -> bool:
    """True when the running task was asked to cancel: a CancelledError is its own.

    Otherwise a CancelledError comes from inside a hook (it awaited a future that
    someone else cancelled) and is a hook failure like any other exception.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class DispatchOwner(Protocol):
    """What a dispatcher reports to (the socket's connection)."""

    def pause_reading(self, reason: int) -> None:
        """Stop reading from the client for ``reason`` (here ``_pausing.INBOX``)."""

    def resume_reading(self, reason: int) -> None:
        """Let go of ``reason``: read again unless another reason holds."""

    def hook_failed(self) -> None:
        """A hook raised (its error hook is dispatched): close the socket with 1011."""

    def task_cancelled(self) -> None:
        """The dispatcher's task was cancelled from outside: abort the socket."""

    def hooks_running(self, running: bool) -> None:
        """A task starts (True) or stops (False) running hooks: what they send is
        written at once meanwhile."""


class Dispatcher:
    """Calls one socket's hooks (see the module docstring).

    Args:
        ws: the first argument of every hook.
        context: the server's: its ``hooks`` (the handler's hooks by kind,
            :func:`~aiohttp_upgrade._handler.hook_table`), ``tasks`` (where running
            tasks are registered until they end, so that shutdown can wait for
            them) and ``counters`` (messages in, closes, hook failures).
        owner: told to pause and resume reading, when a hook failed and while a
            task runs hooks.
    """

    __slots__ = (
        "_counters",
        "_dropping",
        "_hooks",
        "_in_dropped",
        "_inbox",
        "_message",
        "_owner",
        "_reading_paused",
        "_task",
        "_tasks",
        "_ws",
    )

    def __init__(
        self,
        ws: ServerWebSocket[Any],
        context: SocketContext,
        owner: DispatchOwner,
    ) -> None:
        self._ws = ws
        self._hooks = hooks = context.hooks
        self._tasks = context.tasks
        self._counters = context.counters
        self._owner = owner
        # Created on first use: sockets whose hooks are plain functions rarely queue.
        self._inbox: deque[tuple[int, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        message = hooks[Kind.MESSAGE]
        # The plain message hook, called straight from message(); None otherwise.
        self._message = message[0] if message is not None and not message[1] else None
        self._reading_paused = False
        self._in_dropped = False
        self._dropping = False  # our task runs the dropped hook

    @property
    def busy(self) -> bool:
        """True while a task is working through queued events."""
        return self._task is not None

    def dispatch(self, kind: int, arg: Any = None) -> None:
        """Run the hook of ``kind`` now (plain, nothing queued) or queue it; for
        ``subscription`` see :meth:`subscription`."""
        hook = self._hooks[kind]
        if hook is None:
            return
        function, is_async = hook
        if self._task is None and not is_async:
            try:
                if kind in _WS_ONLY:
                    function(self._ws)
                else:
                    function(self._ws, arg)
            except (Exception, asyncio.CancelledError) as exc:  # no task to cancel
                self.hook_failed(exc)
            return
        self._queue(kind, arg)

    def message(self, message: str | bytes) -> None:
        """Dispatch a message: :meth:`dispatch` for the hot path."""
        self._counters.messages_in += 1
        function = self._message
        if function is not None and self._task is None:
            try:
                function(self._ws, message)
            except (Exception, asyncio.CancelledError) as exc:  # no task to cancel
                self.hook_failed(exc)
            return
        self.dispatch(_MESSAGE, message)

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        """Dispatch ``subscription``: called at once when it is a plain function and
        nothing is queued, else queued behind this socket's earlier events (and,
        for a closing socket, before ``close``)."""
        hook = self._hooks[_SUBSCRIPTION]
        if hook is None:
            return
        if self._task is None and not hook[1]:
            try:
                hook[0](self._ws, topic, new_count, old_count)
            except (Exception, asyncio.CancelledError) as exc:  # no task to cancel
                self.hook_failed(exc)
            return
        self._queue(_SUBSCRIPTION, (topic, new_count, old_count))

    def dropped(self, message: Any) -> None:
        """Dispatch ``dropped``; a message dropped by the hook itself is not reported."""
        if self._in_dropped or (
            self._dropping and asyncio.current_task() is self._task
        ):
            return
        self._in_dropped = True
        try:
            # Sends hand over their bytes payload; a bytes-like from elsewhere (a
            # server publish) is copied only here, for a hook that gets it.
            if type(message) is Relayed:  # a relayed text message, decoded only now
                message = message.decode()
            elif isinstance(message, bytearray | memoryview):  # as ``message`` gets it
                message = bytes(message)
            self.dispatch(_DROPPED, message)
        finally:
            self._in_dropped = False

    def closed(self, code: int, reason: str) -> None:
        """Dispatch ``close`` after whatever is queued; call exactly once."""
        self._counters.closed(code)
        hook = self._hooks[_CLOSE]
        if hook is None:
            return
        if self._task is None and not hook[1]:
            result = self._call_close_hook(hook[0], (code, reason))
            if result is not None:  # a plain function that returned an awaitable
                self._track(asyncio.ensure_future(self._await_close(result)))
            return
        self._queue(_CLOSE, (code, reason))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drop_queued(self) -> None:
        """Forget events not yet dispatched: once the server closes a socket, its
        hooks see no more messages (as in Bun, where none can be pending)."""
        inbox = self._inbox
        if inbox:
            inbox.clear()
            self._resume_if_low(inbox)

    def _queue(self, kind: int, arg: Any) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append((kind, arg))
        if self._task is None:
            # _run() takes itself out of the server's set when it ends.
            task = self._task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
        if len(inbox) >= INBOX_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self._owner.pause_reading(_INBOX)

    def _resume_if_low(self, inbox: deque[tuple[int, Any]]) -> None:
        if self._reading_paused and len(inbox) < INBOX_HIGH_WATER // 2:
            self._reading_paused = False
            self._owner.resume_reading(_INBOX)

    def hook_failed(self, exc: BaseException) -> None:
        """A hook raised ``exc``: log it, drop what is queued, dispatch ``error``,
        and have the owner close the socket with 1011."""
        self._counters.hook_failures += 1
        logger.error(
            "WebSocket handler raised; closing %r with 1011", self._ws, exc_info=exc
        )
        if self._ws.ready_state == _READY_OPEN:
            self.drop_queued()
        error = self._hooks[_ERROR]
        if error is not None:
            inbox = self._inbox
            if self._task is not None and inbox:
                # After the events still queued (a client's Close keeps them),
                # before ``close``.
                if inbox[-1][0] == _CLOSE:
                    inbox.insert(len(inbox) - 1, (_ERROR, exc))
                else:
                    inbox.append((_ERROR, exc))
            elif self._task is None and not error[1]:
                self._call_error_hook(error[0], exc)
            else:
                self._queue(_ERROR, exc)
        self._owner.hook_failed()

    def _call_error_hook(self, function: Hook, exc: BaseException) -> Any:
        try:
            return function(self._ws, exc)
        except (Exception, asyncio.CancelledError):  # plain function: no task here
            logger.exception("WebSocket error hook raised for %r", self._ws)
            return None

    def _call_close_hook(self, function: Hook, code_reason: tuple[int, str]) -> Any:
        try:
            return function(self._ws, *code_reason)
        except (Exception, asyncio.CancelledError):  # plain function: no task here
            logger.exception("WebSocket close hook raised for %r", self._ws)
            return None

    async def _run(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        me = self._task
        hooks = self._hooks
        ws = self._ws
        owner = self._owner
        owner.hooks_running(True)
        try:
            while inbox:
                kind, arg = inbox.popleft()
                if self._reading_paused:
                    self._resume_if_low(inbox)
                hook = hooks[kind]
                assert hook is not None
                function = hook[0]
                if kind >= _SUBSCRIPTION:
                    if kind == _SUBSCRIPTION:
                        await self._run_subscription(function, arg)
                    elif kind == _DROPPED:
                        await self._run_dropped(function, arg)
                    else:
                        await self._finish(kind, function, arg)
                    continue
                try:  # the hot path: one message
                    result = function(ws) if kind in _WS_ONLY else function(ws, arg)
                    if result is not None:
                        await result
                except asyncio.CancelledError as exc:
                    if _cancelling():
                        raise
                    self.hook_failed(exc)
                except Exception as exc:
                    self.hook_failed(exc)
        except asyncio.CancelledError:
            # Cancelled from outside (the loop is shutting down): the socket is
            # aborted (which queues its close hook), and the close hook still runs.
            self._owner.task_cancelled()
            self._cancelled()
            raise
        finally:
            owner.hooks_running(False)
            if me is not None:
                self._tasks.discard(me)
            if self._task is me:
                self._task = None

    async def _run_hook(self, function: Hook, *args: Any) -> None:
        """Run one queued hook; its failure (its own CancelledError included) is
        dispatched like a ``message`` hook's."""
        try:
            result = function(self._ws, *args)
            if result is not None:
                await result
        except asyncio.CancelledError as exc:
            if _cancelling():
                raise
            self.hook_failed(exc)
        except Exception as exc:
            self.hook_failed(exc)

    async def _run_subscription(
        self, function: Hook, change: tuple[str, int, int]
    ) -> None:
        """Run a queued ``subscription`` hook: ``change`` is (topic, new, old)."""
        await self._run_hook(function, *change)

    async def _run_dropped(self, function: Hook, message: Any) -> None:
        """Run a queued ``dropped`` hook; what it drops itself, before or after an
        await, is not reported (it would call the hook again, and again)."""
        self._dropping = True
        try:
            await self._run_hook(function, message)
        finally:
            self._dropping = False

    async def _finish(self, kind: int, function: Hook, arg: Any) -> None:
        """Run an error or close hook; its failure is logged, not dispatched."""
        if kind == _ERROR:
            result = self._call_error_hook(function, arg)
        else:
            result = self._call_close_hook(function, arg)
        if result is None:
            return
        try:
            await result
        except asyncio.CancelledError:
            if _cancelling():
                raise
            logger.exception("WebSocket %s hook raised for %r", _name(kind), self._ws)
        except Exception:
            logger.exception("WebSocket %s hook raised for %r", _name(kind), self._ws)

    def _cancelled(self) -> None:
        """Our task was cancelled: hand the close hook, if still due, to a new task."""
        inbox = self._inbox
        self._task = None
        closes = [item for item in inbox or () if item[0] == _CLOSE]
        if inbox is not None:
            inbox.clear()
        if not closes:
            return
        hook = self._hooks[_CLOSE]
        assert hook is not None
        result = self._call_close_hook(hook[0], closes[0][1])
        if result is not None:
            self._track(asyncio.ensure_future(self._await_close(result)))

    async def _await_close(self, awaitable: Any) -> None:
        try:
            await awaitable
        except (Exception, asyncio.CancelledError):
            logger.exception("WebSocket close hook raised for %r", self._ws)


def _name(kind: int) -> str:
    return HOOK_NAMES[kind]
