"""The chat's ``GET /metrics``: its server's metrics in Prometheus' text format.

The numbers come from ``server.metrics()`` through the library's
:class:`~aiohttp_upgrade.PrometheusCollector` (extra ``metrics``), in a registry
of the app's own, read when scraped. Each worker has its own: scrape every worker
(or label them). They are for the operator: only a direct client on the local
host gets them (Prometheus on the same machine, or a sidecar); a request that
came through a proxy (``X-Forwarded-For`` and friends) gets 403.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aiohttp_upgrade import PrometheusCollector, Server

__all__ = ["METRICS_REGISTRY_KEY", "add_metrics_route"]

METRICS_REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _local(request: web.Request) -> bool:
    """True for a direct request from the local host."""
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:  # a Unix socket: local by nature
        return bool(request.remote is None or not request.remote)


async def metrics(request: web.Request) -> web.Response:
    """The metrics as Prometheus text (the exposition format prometheus_client
    writes by default), or 403 for anyone but the local host."""
    if not _local(request):
        return web.Response(status=403, text="metrics are for the local host")
    body = generate_latest(request.app[METRICS_REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics_route(app: web.Application, server: Server[Any]) -> None:
    """Serve ``server``'s metrics at ``GET /metrics`` of ``app``."""
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(server))
    app[METRICS_REGISTRY_KEY] = registry
    app.router.add_get("/metrics", metrics)
