"""Handler options with Bun's defaults and validation. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .deflate import PerMessageDeflate
from .errors import InvalidOptionError

__all__ = [
    "DEFAULT_BACKPRESSURE_LIMIT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_PAYLOAD_LENGTH",
    "MAX_IDLE_TIMEOUT",
    "Options",
]

DEFAULT_MAX_PAYLOAD_LENGTH: Final = 16 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT: Final = 120
DEFAULT_BACKPRESSURE_LIMIT: Final = 16 * 1024 * 1024
MAX_IDLE_TIMEOUT: Final = 960  # Bun rejects larger values


@dataclass(frozen=True, slots=True)
class Options:
    """The validated options of one handler."""

    max_payload_length: int = DEFAULT_MAX_PAYLOAD_LENGTH
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    backpressure_limit: int = DEFAULT_BACKPRESSURE_LIMIT
    close_on_backpressure_limit: bool = False
    per_message_deflate: PerMessageDeflate | None = None
    send_pings: bool = True
    publish_to_self: bool = False
    # True is Bun's behaviour (it always resets on a send); uWebSockets, the C++
    # library under Bun, has this as resetIdleTimeoutOnSend with false as default.
    reset_idle_timeout_on_send: bool = True

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Options:
        """Validate raw option values; raise InvalidOptionError naming the option."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        v = dict(values)
        for name in ("max_payload_length", "backpressure_limit"):
            if name in v:
                value = v[name]
                if type(value) is not int or value < 0:
                    raise InvalidOptionError(
                        name, f"must be an int >= 0, got {value!r}"
                    )
        if v.get("max_payload_length") == 0:
            raise InvalidOptionError("max_payload_length", "must be > 0")
        if "idle_timeout" in v:
            value = v["idle_timeout"]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= MAX_IDLE_TIMEOUT
            ):
                raise InvalidOptionError(
                    "idle_timeout",
                    f"must be a number of seconds in 0..{MAX_IDLE_TIMEOUT}, got {value!r}",
                )
        for name in (
            "close_on_backpressure_limit",
            "send_pings",
            "publish_to_self",
            "reset_idle_timeout_on_send",
        ):
            if name in v and not isinstance(v[name], bool):
                raise InvalidOptionError(name, f"must be a bool, got {v[name]!r}")
        if "per_message_deflate" in v:
            deflate = v["per_message_deflate"]
            if deflate is True:
                v["per_message_deflate"] = PerMessageDeflate()
            elif deflate is False or deflate is None:
                v["per_message_deflate"] = None
            elif not isinstance(deflate, PerMessageDeflate):
                raise InvalidOptionError(
                    "per_message_deflate",
                    f"must be a bool or PerMessageDeflate, got {deflate!r}",
                )
        return cls(**v)
