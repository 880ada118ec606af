"""Prometheus: a custom collector that reads ``server.metrics()`` at scrape time.

Needs the ``metrics`` extra (``pip install aiohttp-upgrade[metrics]``:
``prometheus_client``). Nothing is updated on the server's paths: the collector
reads the plain counters when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # the extra is not installed
    if exc.name != "prometheus_client":
        raise
    raise ModuleNotFoundError(
        f"PrometheusCollector needs the metrics extra ({exc}): "
        "pip install 'aiohttp-upgrade[metrics]'",
        name=exc.name,
    ) from exc

from ._metrics import COUNTERS, GAUGES

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._server import Server

__all__ = ["PrometheusCollector"]


class PrometheusCollector(Collector):
    """Reports a :class:`~aiohttp_upgrade.Server`'s metrics to Prometheus, read
    when scraped: ``REGISTRY.register(PrometheusCollector(server))``.

    Every name starts with ``namespace`` (``websocket_`` by default): counters
    end in ``_total``; ``closes_total`` has a ``code`` label and
    ``upgrades_refused_total`` a ``reason`` label; ``labels`` are added to
    every sample (``{"server": "chat"}`` for several servers in one process).
    """

    def __init__(
        self,
        server: Server[Any],
        namespace: str = "websocket",
        labels: dict[str, str] | None = None,
    ) -> None:
        self.server = server
        self.namespace = namespace
        self.labels = dict(labels or {})

    def describe(self) -> Iterator[Any]:
        """Nothing up front: the registry then calls :meth:`collect` only when
        scraped (a scrape-time collector)."""
        return iter(())

    def collect(self) -> Iterator[Any]:
        """The metrics now, as Prometheus metric families."""
        metrics: Metrics = self.server.metrics()
        prefix = f"{self.namespace}_" if self.namespace else ""
        names, values = list(self.labels), list(self.labels.values())
        for name, field, doc in COUNTERS:
            family = CounterMetricFamily(prefix + name, doc, labels=names)
            family.add_metric(values, getattr(metrics, field))
            yield family
        for name, field, doc in GAUGES:
            gauge = GaugeMetricFamily(prefix + name, doc, labels=names)
            gauge.add_metric(values, getattr(metrics, field))
            yield gauge
        closes = CounterMetricFamily(
            prefix + "closes", "Sockets closed, by close code.", labels=[*names, "code"]
        )
        for code, count in sorted(metrics.closes.items()):
            closes.add_metric([*values, str(code)], count)
        yield closes
        refused = CounterMetricFamily(
            prefix + "upgrades_refused",
            "Handshakes refused, by reason.",
            labels=[*names, "reason"],
        )
        for reason, count in sorted(metrics.upgrades_refused.items()):
            refused.add_metric([*values, reason], count)
        yield refused
