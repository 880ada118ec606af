"""The demo's ``/metrics``: the chat server's metrics in Prometheus' text
format, scraped and parsed as Prometheus would."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from .demo_support import (
    Client,
    connect,
    join,
    make_config,
    sign_in,
    start_chat,
    wait_for,
)


async def scrape(client: Client) -> dict[str, float]:
    """GET /metrics, parsed: sample name (with labels) -> value."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = (
                sample.value
            )
    return values


async def test_metrics_are_scraped_in_the_prometheus_format(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """The page parses as Prometheus text and counts what the chat did: the open
    socket, its messages, the join's publish, and its close by code."""
    client = await start_chat(aiohttp_client, make_config(tmp_path))
    before = await scrape(client)
    assert before["websocket_open_sockets"] == 0
    await sign_in(client, "ada")
    ws = await connect(client)
    await join(ws, "general")
    await ws.send_json({"type": "message", "room": "general", "text": "hi"})
    await wait_for(ws, "message")
    during = await scrape(client)
    assert during["websocket_open_sockets"] == 1
    assert during["websocket_messages_received_total"] == 2
    assert during["websocket_publishes_total"] >= 1
    assert during["websocket_bytes_received_total"] > 0
    await ws.close()  # returns with the server's Close: the close is handled
    after = await scrape(client)
    assert after["websocket_open_sockets"] == 0
    assert after["websocket_closes_total{code=1000}"] == 1


async def test_metrics_are_for_the_local_host_only(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A scrape through a proxy (X-Forwarded-For) is refused: the numbers are for
    the operator, not for the public."""
    client = await start_chat(aiohttp_client, make_config(tmp_path))
    response = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
    assert response.status == 403
