"""The hook table: every hook of ``WebSocketHandler``, once. Pure.

:data:`HOOKS` is the one list of hooks. The handler reads it for its hook names,
the misspelling warnings and :func:`~aiohttp_upgrade._handler.hook_table`; the
dispatcher indexes a socket's hooks by :class:`Kind`, whose numbers are the
positions in :data:`HOOKS` (checked when this module is imported); the tests read
it too. Every hook may be a plain function or a coroutine function: which one a
handler's hook is gets recorded per handler, in its :data:`HookTable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, NamedTuple

__all__ = [
    "HOOKS",
    "HOOK_NAMES",
    "SERVER_HOOKS",
    "SERVER_HOOK_NAMES",
    "Hook",
    "HookSpec",
    "HookTable",
    "Kind",
]

Hook = Callable[..., Awaitable[None] | None]

HookTable = tuple["tuple[Hook, bool] | None", ...]
"""A handler's hooks by :class:`Kind`: ``(function, is_coroutine_function)``, or
None for a hook the handler does not override (it is skipped, at no cost)."""


class HookSpec(NamedTuple):
    """One hook: its name and how many positional arguments it takes, ``ws``
    included (``self`` not)."""

    name: str
    arity: int


HOOKS: Final = (
    HookSpec("open", 1),
    HookSpec("message", 2),
    HookSpec("ping", 2),
    HookSpec("pong", 2),
    HookSpec("drain", 1),
    HookSpec("rate_limited", 1),
    HookSpec("subscription", 4),
    HookSpec("dropped", 2),
    HookSpec("error", 2),
    HookSpec("close", 3),
)
"""Every hook, in :class:`Kind` order."""

HOOK_NAMES: Final = tuple(spec.name for spec in HOOKS)

SERVER_HOOKS: Final = (HookSpec("presence", 3),)
"""Hooks about a topic rather than a socket: called once per event for the whole
server, without a ``ws`` (the arity counts their arguments; ``self`` not)."""

SERVER_HOOK_NAMES: Final = tuple(spec.name for spec in SERVER_HOOKS)


class Kind:
    """Event kinds: the position of each hook in :data:`HOOKS`.

    The dispatcher relies on the order: the kinds before ``SUBSCRIPTION`` take its
    hot path; ``DROPPED``, ``ERROR`` and ``CLOSE`` come last, ``CLOSE`` after
    everything.
    """

    OPEN: Final = 0
    MESSAGE: Final = 1
    PING: Final = 2
    PONG: Final = 3
    DRAIN: Final = 4
    RATE_LIMITED: Final = 5
    SUBSCRIPTION: Final = 6
    DROPPED: Final = 7
    ERROR: Final = 8
    CLOSE: Final = 9


def _check_kinds() -> None:
    """Kind's numbers must be the hooks' positions in HOOKS, and cover them all."""
    kinds = {
        name.lower(): value for name, value in vars(Kind).items() if name.isupper()
    }
    expected = {spec.name: index for index, spec in enumerate(HOOKS)}
    if kinds != expected:
        raise RuntimeError(f"Kind {kinds} does not match HOOKS {expected}")


_check_kinds()
