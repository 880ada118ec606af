"""Bun's camelCase names used on a socket or a server: an ``AttributeError`` that
names the Python spelling. Pure.

The same idea as the handler's misspelling warnings (``_handler._meant``): a name
is compared with the public names of the object in a normal form (lower case,
no underscores), so ``readyState`` finds ``ready_state`` and
``pendingWebSockets`` finds ``pending_websockets``; Bun names whose Python
counterpart is spelt with other words are listed in :data:`RENAMED`. The hint is
computed only when the normal lookup has already failed (``__getattr__``), so
it costs nothing on ordinary attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

__all__ = ["RENAMED", "BunNames", "hint", "missing"]

RENAMED: Final[dict[str, dict[str, str]]] = {
    "ServerWebSocket": {
        "binaryType": "nothing: binary messages are always bytes",
    },
    "Server": {
        "requestIP": "request.remote in fetch (ws.remote_address on a socket)",
        "stop": (
            "shutdown() to close every socket (stop(true)); the listener is "
            "aiohttp's: site.stop() or runner.cleanup()"
        ),
        "port": "the aiohttp site's port (site.port)",
        "hostname": "the host given to web.run_app() or web.TCPSite",
        "url": "the aiohttp site's name (site.name)",
        "timeout": "the handler's idle_timeout (one value for every socket)",
    },
}
"""Bun names with no same-worded Python name, by class: what to use instead."""


def _normal(name: str) -> str:
    return name.lower().replace("_", "")


def hint(obj: object, name: str) -> str | None:
    """What to use on ``obj`` instead of Bun's ``name``, or None if it is not one."""
    if name.startswith("_"):
        return None
    renamed = RENAMED.get(type(obj).__name__, {}).get(name)
    if renamed is not None:
        return renamed
    if name.islower():  # no camelCase: a plain typo, not a Bun name
        return None
    normal = _normal(name)
    for public in dir(obj):
        if not public.startswith("_") and _normal(public) == normal:
            return public
    return None


def missing(obj: object, name: str) -> AttributeError:
    """The AttributeError for ``obj.name``, naming the Python spelling of a Bun
    name."""
    message = f"{type(obj).__name__!r} object has no attribute {name!r}"
    meant = hint(obj, name)
    if meant is not None:
        message += f"; Bun's {name} is {meant} here"
    return AttributeError(message, name=name, obj=obj)


class BunNames:
    """A base class whose failed attribute lookups name the Python spelling of a
    Bun name. ``__getattr__`` runs only when the normal lookup fails; type
    checkers do not see it, so they still flag a misspelt attribute."""

    __slots__ = ()

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> object:
            raise missing(self, name)
