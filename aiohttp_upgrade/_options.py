"""Handler options with Bun's defaults and validation. Pure.

:data:`OPTIONS` is the one list of options: name, default, validator and
documentation. :class:`Options` (checked against it when this module is
imported), ``WebSocketHandler``'s class attributes, its docstring, the misspelling
warnings and the tests all read it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from ._deflate import PerMessageDeflate
from ._errors import InvalidOptionError
from ._ratelimit import RateLimit, check_rate_limit

__all__ = [
    "DEFAULT_BACKPRESSURE_LIMIT",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_PAYLOAD_LENGTH",
    "DEFAULT_MAX_PRESENCE_META_LENGTH",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "MAX_IDLE_TIMEOUT",
    "OPTIONS",
    "OPTION_NAMES",
    "OptionSpec",
    "Options",
    "check_drain",
    "options_doc",
]

DEFAULT_MAX_PAYLOAD_LENGTH: Final = 16 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT: Final = 120
DEFAULT_BACKPRESSURE_LIMIT: Final = 16 * 1024 * 1024
MAX_IDLE_TIMEOUT: Final = 960  # Bun rejects larger values
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
DEFAULT_MAX_PRESENCE_META_LENGTH: Final = 4096


def _size(name: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise InvalidOptionError(name, f"must be an int >= 0, got {value!r}")
    return value


def _positive_size(name: str, value: Any) -> int:
    size = _size(name, value)
    if size == 0:
        raise InvalidOptionError(name, "must be > 0")
    return size


def _seconds(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_IDLE_TIMEOUT
    ):
        raise InvalidOptionError(
            name, f"must be a number of seconds in 0..{MAX_IDLE_TIMEOUT}, got {value!r}"
        )
    return value


def _timeout(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise InvalidOptionError(
            name, f"must be a finite number of seconds > 0, got {value!r}"
        )
    return value


def _period(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise InvalidOptionError(
            name, f"must be a finite number of seconds >= 0 (0: off), got {value!r}"
        )
    return value


def check_drain(value: Any) -> float:
    """``server.shutdown(drain=...)``: seconds >= 0, or InvalidOptionError."""
    return _period("drain", value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptionError(name, f"must be a bool, got {value!r}")
    return value


def _deflate(name: str, value: Any) -> PerMessageDeflate | None:
    if value is True:
        return PerMessageDeflate()
    if value is False or value is None:
        return None
    if isinstance(value, dict) and value.keys() <= {"compress", "decompress"}:
        return PerMessageDeflate(**value)  # Bun's {compress, decompress}
    if not isinstance(value, PerMessageDeflate):
        raise InvalidOptionError(
            name,
            "must be a bool, a PerMessageDeflate or a dict of Bun's compress and "
            f"decompress, got {value!r}",
        )
    return value


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One handler option.

    Attributes:
        name: the class attribute and keyword argument of ``WebSocketHandler``.
        default: its value there (Bun's default).
        check: ``check(name, value)`` returns the value :class:`Options` keeps,
            or raises InvalidOptionError naming the option.
        shown_default: the default as the docstring shows it.
        doc: what it does, for the handler's docstring.
    """

    name: str
    default: object
    check: Callable[[str, Any], Any]
    shown_default: str
    doc: str


OPTIONS: Final = (
    OptionSpec(
        "max_payload_length",
        DEFAULT_MAX_PAYLOAD_LENGTH,
        _positive_size,
        "16 MiB",
        "A larger message, also after inflating, closes the socket with 1009.",
    ),
    OptionSpec(
        "idle_timeout",
        DEFAULT_IDLE_TIMEOUT,
        _seconds,
        str(DEFAULT_IDLE_TIMEOUT),
        "Seconds without a frame in or a send out before the connection is aborted "
        "(``close`` sees 1006); 0 disables; at most 960; fractions allowed.",
    ),
    OptionSpec(
        "max_lifetime",
        0,
        _period,
        "0",
        "Seconds after which a socket is closed with 1001 (``close`` sees it), "
        "whatever its activity, so that clients reconnect (uWebSockets' "
        "``maxLifetime``); each socket's is drawn from the last tenth of it, so "
        "that sockets opened together do not reconnect together; 0 disables.",
    ),
    OptionSpec(
        "backpressure_limit",
        DEFAULT_BACKPRESSURE_LIMIT,
        _size,
        "16 MiB",
        "How far behind a client may fall before sends to it drop the message and "
        "return 0: the bytes still waiting for it at the start of an event-loop "
        "turn (what one turn sends is not counted within that turn; see the flow "
        "control guide).",
    ),
    OptionSpec(
        "close_on_backpressure_limit",
        False,
        _flag,
        "False",
        "Abort the connection instead of dropping (``close`` sees 1006).",
    ),
    OptionSpec(
        "per_message_deflate",
        False,
        _deflate,
        "False",
        "True (Bun's shared mode), a :class:`~aiohttp_upgrade.PerMessageDeflate` "
        'or Bun\'s ``{"compress": ..., "decompress": ...}`` to negotiate '
        "permessage-deflate (RFC 7692).",
    ),
    OptionSpec(
        "send_pings",
        True,
        _flag,
        "True",
        "Ping a socket at 3/4 of ``idle_timeout`` before closing it as idle.",
    ),
    OptionSpec(
        "ping_interval",
        0,
        _period,
        "0",
        "Seconds between pings to every socket, whatever its traffic and apart "
        "from the idle timeout (pings are not activity, pongs are); with "
        "``idle_timeout=0`` they keep connections through proxies without ever "
        "closing them; 0 disables.",
    ),
    OptionSpec(
        "publish_to_self",
        False,
        _flag,
        "False",
        "``ws.publish`` also reaches ``ws`` when it is subscribed.",
    ),
    # True is Bun's behaviour (it always resets on a send); uWebSockets, the C++
    # library under Bun, has this as resetIdleTimeoutOnSend with false as default.
    OptionSpec(
        "reset_idle_timeout_on_send",
        True,
        _flag,
        "True",
        "Sends restart the idle timer too, as in Bun. With False only the client's "
        "frames keep a socket alive, so a dead client in a busy room is pinged and "
        "closed.",
    ),
    OptionSpec(
        "close_timeout",
        DEFAULT_CLOSE_TIMEOUT,
        _timeout,
        str(DEFAULT_CLOSE_TIMEOUT),
        "Seconds a closing connection gets to flush its last bytes and for the "
        "client to close its side before it is aborted.",
    ),
    OptionSpec(
        "shutdown_timeout",
        DEFAULT_SHUTDOWN_TIMEOUT,
        _timeout,
        str(DEFAULT_SHUTDOWN_TIMEOUT),
        "Seconds ``server.shutdown()`` (and so app shutdown) waits for the sockets' "
        "``close`` and other running hooks before it returns.",
    ),
    OptionSpec(
        "shutdown_drain",
        0,
        _period,
        "0",
        "Seconds over which a shutdown spreads its closes (a rolling drain: clients "
        "do not all reconnect at once); shutdown then takes at most "
        "``shutdown_drain + shutdown_timeout``; 0 closes every socket at once.",
    ),
    OptionSpec(
        "rate_limit",
        None,
        check_rate_limit,
        "None",
        "A :class:`~aiohttp_upgrade.RateLimit`: the frames (of every kind) and bytes "
        "per second each socket may send. Past it the ``rate_limited`` hook runs and "
        "the socket is not read until its budget is back; without that hook the "
        "socket is closed with 1008.",
    ),
    OptionSpec(
        "max_presence_meta_length",
        DEFAULT_MAX_PRESENCE_META_LENGTH,
        _positive_size,
        "4096",
        "Largest presence meta (``ws.track``), in bytes of its compact JSON.",
    ),
)
"""Every handler option, in the order the docs list them."""

OPTION_NAMES: Final = tuple(spec.name for spec in OPTIONS)


def options_doc(indent: str = "") -> str:
    """The options as a reST definition list (name and default, then the doc
    indented four more spaces), each line starting with ``indent``."""
    lines = []
    for spec in OPTIONS:
        lines.append(f"{indent}``{spec.name}`` ({spec.shown_default})")
        inner = indent + "    "
        lines += textwrap.wrap(
            spec.doc, 84, initial_indent=inner, subsequent_indent=inner
        )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Options:
    """The validated options of one handler (see :data:`OPTIONS`)."""

    max_payload_length: int = DEFAULT_MAX_PAYLOAD_LENGTH
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_lifetime: float = 0
    backpressure_limit: int = DEFAULT_BACKPRESSURE_LIMIT
    close_on_backpressure_limit: bool = False
    per_message_deflate: PerMessageDeflate | None = None
    send_pings: bool = True
    ping_interval: float = 0
    publish_to_self: bool = False
    reset_idle_timeout_on_send: bool = True
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    shutdown_drain: float = 0
    rate_limit: RateLimit | None = None
    max_presence_meta_length: int = DEFAULT_MAX_PRESENCE_META_LENGTH

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Options:
        """Validate raw option values; raise InvalidOptionError naming the option,
        or TypeError for a name that is not an option."""
        unknown = set(values) - set(OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls(
            **{
                spec.name: spec.check(spec.name, values[spec.name])
                for spec in OPTIONS
                if spec.name in values
            }
        )


def _check_options() -> None:
    """Options must have the table's names, in order, and its defaults, checked."""
    table = {spec.name: spec.check(spec.name, spec.default) for spec in OPTIONS}
    declared = {field.name: field.default for field in fields(Options)}
    if declared != table or tuple(declared) != OPTION_NAMES:
        raise RuntimeError(f"Options {declared} does not match OPTIONS {table}")


_check_options()
