"""OpenTelemetry: observable instruments that read ``server.metrics()`` when
the SDK collects.

Needs the ``metrics`` extra (``opentelemetry-api``); the app configures the SDK
(a ``MeterProvider`` with its readers and exporters) as usual. Nothing is updated
on the server's paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics as otel_metrics
except ModuleNotFoundError as exc:  # the extra is not installed
    if exc.name not in ("opentelemetry", "opentelemetry.metrics"):
        raise
    raise ModuleNotFoundError(
        f"observe_metrics needs the metrics extra ({exc}): "
        "pip install 'aiohttp-upgrade[metrics]'",
        name=exc.name,
    ) from exc

from ._metrics import COUNTERS, GAUGES

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._server import Server

__all__ = ["observe_metrics"]


def _otel_name(namespace: str, name: str) -> str:
    """``messages_received`` -> ``websocket.messages.received`` (OTel style)."""
    return f"{namespace}.{name.replace('_', '.', 1)}" if namespace else name


class _Reading:
    """The callbacks of one server's instruments, which share one
    ``server.metrics()`` snapshot per collection: an instrument that has read
    the current snapshot and asks again starts the next collection (whatever
    order the SDK calls them in)."""

    def __init__(self, server: Server[Any]) -> None:
        self.server = server
        self._latest: Metrics | None = None
        self._read: set[str] = set()  # the instruments that read _latest

    def metrics(self, instrument: str) -> Metrics:
        """This collection's snapshot, for ``instrument``."""
        latest = self._latest
        if latest is None or instrument in self._read:
            latest = self._latest = self.server.metrics()
            self._read = set()
        self._read.add(instrument)
        return latest

    def field(self, name: str) -> Callable[[Any], Iterable[otel_metrics.Observation]]:
        def observe(options: Any) -> Iterable[otel_metrics.Observation]:
            return [otel_metrics.Observation(getattr(self.metrics(name), name))]

        return observe

    def closes(self, options: Any) -> Iterable[otel_metrics.Observation]:
        return [
            otel_metrics.Observation(count, {"code": code})
            for code, count in self.metrics("closes").closes.items()
        ]

    def refused(self, options: Any) -> Iterable[otel_metrics.Observation]:
        return [
            otel_metrics.Observation(count, {"reason": reason})
            for reason, count in self.metrics("refused").upgrades_refused.items()
        ]


def observe_metrics(
    server: Server[Any],
    meter: otel_metrics.Meter | None = None,
    namespace: str = "websocket",
) -> list[Any]:
    """Register observable instruments for ``server``'s metrics on ``meter``
    (default: ``opentelemetry.metrics.get_meter("aiohttp_upgrade")``).

    Counters become observable counters (``websocket.messages.received`` ...,
    ``websocket.closes`` with a ``code`` attribute, ``websocket.upgrades.refused``
    with ``reason``), gauges observable gauges (``websocket.open_sockets`` ...).
    Each is read from ``server.metrics()`` when the SDK collects. Returns the
    instruments.
    """
    if meter is None:
        meter = otel_metrics.get_meter("aiohttp_upgrade")
    reading = _Reading(server)
    prefix = f"{namespace}." if namespace else ""
    instruments: list[Any] = [
        meter.create_observable_counter(
            _otel_name(namespace, name), [reading.field(field)], description=doc
        )
        for name, field, doc in COUNTERS
    ]
    instruments += [
        meter.create_observable_gauge(
            prefix + name, [reading.field(field)], description=doc
        )
        for name, field, doc in GAUGES
    ]
    instruments.append(
        meter.create_observable_counter(
            prefix + "closes", [reading.closes], description="Sockets closed, by code."
        )
    )
    instruments.append(
        meter.create_observable_counter(
            prefix + "upgrades.refused",
            [reading.refused],
            description="Handshakes refused, by reason.",
        )
    )
    return instruments
