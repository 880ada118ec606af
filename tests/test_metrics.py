"""Metrics: plain counters updated where the work happens, read by
``server.metrics()`` (no dependency), by a Prometheus collector and by
OpenTelemetry observable instruments (extra ``metrics``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aiohttp_upgrade import (
    LocalBroker,
    Metrics,
    PrometheusCollector,
    RateLimit,
    Server,
    ServerWebSocket,
    observe_metrics,
)

from .conftest import Event, Recorder, ServeFactory
from .flow_support import fill
from .wire import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Raw,
    client_frame,
    close_payload,
    connect,
    handshake,
    parse_close,
)


class Failing(Recorder):
    """Raises in ``message`` on "boom"."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        if message == "boom":
            raise RuntimeError("boom")
        super().message(ws, message)


async def test_a_new_server_counts_nothing(serve: ServeFactory) -> None:
    """A fresh server's snapshot is all zeros and empty maps."""
    served = await serve(Recorder())
    metrics = served.server.metrics()
    assert isinstance(metrics, Metrics)
    assert metrics.open_sockets == metrics.messages_in == metrics.bytes_out == 0
    assert metrics.closes == {} and metrics.upgrades_refused == {}


async def test_messages_and_bytes_in_and_out(serve: ServeFactory) -> None:
    """Messages in, sends out, and their bytes are counted; open sockets too."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    frame = client_frame(OP_TEXT, b"hello")
    raw.writer.write(frame + client_frame(OP_PING))
    await handler.next("message")
    ws.send_text("answer")
    ws.send(b"12")
    metrics = served.server.metrics()
    assert metrics.open_sockets == 1
    assert metrics.messages_in == 1
    assert metrics.bytes_in == len(frame) + 6
    assert (metrics.messages_out, metrics.bytes_out) == (2, len("answer") + 2)
    await raw.close()


async def test_publish_counts_deliveries_once_per_publish(serve: ServeFactory) -> None:
    """One publish to three subscribers but the sender: 1 publish, 2 deliveries."""
    handler = Recorder()
    served = await serve(handler)
    raws = [await connect(served.port) for _ in range(3)]
    sockets = [(await handler.next("open")).ws for _ in raws]
    for ws in sockets:
        ws.subscribe("room")
    sockets[0].publish("room", "hi")
    served.server.publish("room", b"all")
    metrics = served.server.metrics()
    assert (metrics.publishes, metrics.deliveries) == (2, 5)
    assert (metrics.messages_out, metrics.bytes_out) == (5, 2 * 2 + 3 * 3)
    assert metrics.topics == 1
    for raw in raws:
        await raw.close()


async def test_closes_are_counted_by_code(serve: ServeFactory) -> None:
    """Each close counts once under its code: the client's, ours, a lost one."""
    handler = Recorder()
    served = await serve(handler)
    first = await connect(served.port)
    await handler.next("open")
    await first.send(OP_CLOSE, close_payload(1000))
    await handler.next("close")
    second = await connect(served.port)
    (await handler.next("open")).ws.close(4001, "bye")
    await handler.next("close")
    third = await connect(served.port)
    await handler.next("open")
    await third.close()
    await handler.next("close")
    assert served.server.metrics().closes == {1000: 1, 4001: 1, 1006: 1}
    await first.close()
    await second.close()


async def test_refused_upgrades_are_counted_by_reason(serve: ServeFactory) -> None:
    """A bad Origin, a wrong version and an invalid handshake count apart."""
    served = await serve(Recorder(), allowed_origins=["https://good.example"])
    cases = [
        {"Origin": "https://evil.example"},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Key": "short"},
    ]
    for headers in cases:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        response = await handshake(reader, writer, headers=headers)
        assert response.status in (400, 403, 426)
        writer.close()
        await writer.wait_closed()
    assert served.server.metrics().upgrades_refused == {
        "origin": 1,
        "version": 1,
        "handshake": 1,
    }


async def test_hook_failures_are_counted(serve: ServeFactory) -> None:
    """A hook that raises counts once (and the socket closes with 1011)."""
    handler = Failing()
    served = await serve(handler)
    raw = await connect(served.port)
    await handler.next("open")
    await raw.send(OP_TEXT, b"boom")
    await handler.next("close")
    metrics = served.server.metrics()
    assert metrics.hook_failures == 1
    assert metrics.closes == {1011: 1}
    await raw.close()


async def test_drops_are_counted(serve: ServeFactory) -> None:
    """A message dropped at the backpressure limit (send returned 0) counts."""
    handler = Recorder(backpressure_limit=64 * 1024)
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await fill(ws, until=0)
    assert served.server.metrics().dropped == 1
    await raw.close()


async def read_forever(raw: Raw) -> None:
    while await raw.reader.read(1 << 20):
        pass


async def test_backpressure_episodes_are_counted(serve: ServeFactory) -> None:
    """An episode of backpressure (a send answered -1) counts once it drains."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    await fill(ws, until=-1)
    assert served.server.metrics().backpressure == 0
    reading = asyncio.create_task(read_forever(raw))
    await handler.next("drain")
    assert served.server.metrics().backpressure == 1
    reading.cancel()
    await raw.close()


async def test_rate_limited_episodes_are_counted(serve: ServeFactory) -> None:
    """Each time a socket goes over its rate limit counts once."""
    handler = Recorder(rate_limit=RateLimit(frames_per_second=10, frame_burst=10))
    served = await serve(handler)
    raw = await connect(served.port)
    await handler.next("open")
    raw.writer.write(client_frame(OP_PING) * 100)
    await handler.next("close")
    assert served.server.metrics().rate_limited == 1
    await raw.close()


# -- Prometheus and OpenTelemetry -------------------------------------------------


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    """The registry scraped as text and parsed back: (sample name, labels) -> value."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_prometheus_reads_the_counters_at_scrape_time(
    serve: ServeFactory,
) -> None:
    """The collector reports the counters as they are when scraped, closes by code."""
    handler = Recorder()
    served = await serve(handler)
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(served.server))
    assert samples(registry)[("websocket_open_sockets", ())] == 0
    raw = await connect(served.port)
    await handler.next("open")
    await raw.send(OP_TEXT, b"one")
    await handler.next("message")
    await raw.send(OP_CLOSE, close_payload(1001))
    await handler.next("close")
    scraped = samples(registry)
    assert scraped[("websocket_messages_received_total", ())] == 1
    assert scraped[("websocket_closes_total", (("code", "1001"),))] == 1
    assert scraped[("websocket_open_sockets", ())] == 0
    _, _, payload = await raw.recv()
    assert parse_close(payload)[0] == 1001
    await raw.close()


async def test_opentelemetry_observes_the_counters(serve: ServeFactory) -> None:
    """Observable instruments report the counters when the reader collects."""
    handler = Recorder()
    served = await serve(handler)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    observe_metrics(served.server, provider.get_meter("test"))
    raw = await connect(served.port)
    await handler.next("open")
    await raw.send(OP_TEXT, b"one")
    event: Event = await handler.next("message")
    assert event.args == ("one",)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: [
            (dict(p.attributes or {}), p.value)
            for p in metric.data.data_points
            if isinstance(p, NumberDataPoint)
        ]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert points["websocket.messages.received"] == [({}, 1)]
    assert points["websocket.open_sockets"] == [({}, 1)]
    provider.shutdown()
    await raw.close()


@pytest.mark.parametrize("name", ["PrometheusCollector", "observe_metrics"])
def test_the_extra_names_are_imported_lazily(name: str) -> None:
    """The Prometheus and OpenTelemetry names are not in ``__all__`` (a star
    import must work without the extra) but import from the package."""
    import aiohttp_upgrade

    assert name not in aiohttp_upgrade.__all__
    assert callable(getattr(aiohttp_upgrade, name))


class CountingBroker(LocalBroker):
    """An in-process broker with RedisBroker's counters, as a broker may offer."""

    published = 7
    received = 5
    dropped = 2
    reconnects = 1
    connected = False


def test_a_brokers_counters_are_reported() -> None:
    """A broker's ``published``, ``received``, ``dropped`` and ``reconnects`` and
    whether it is ``connected`` are read into the snapshot."""
    server: Server[Any] = Server(Recorder(), broker=CountingBroker())
    metrics = server.metrics()
    assert (
        metrics.broker_published,
        metrics.broker_received,
        metrics.broker_dropped,
        metrics.broker_outages,
        metrics.broker_up,
    ) == (7, 5, 2, 1, 0)
    assert Server(Recorder()).metrics().broker_up == 1


# Run before the script: prometheus_client and opentelemetry are not installed,
# as far as imports go (ModuleNotFoundError naming the package).
BLOCK_EXTRA = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prometheus_client", "opentelemetry"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize(
    "access",
    [
        "from aiohttp_upgrade import PrometheusCollector",
        "import aiohttp_upgrade; aiohttp_upgrade.observe_metrics",
    ],
    ids=["prometheus", "opentelemetry"],
)
def test_without_the_extra_the_error_names_it(access: str) -> None:
    """Without the metrics extra, a star import and server.metrics() work, and
    reaching an exporter raises an ImportError that says what to install."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_EXTRA
            + f"""
from aiohttp_upgrade import *
Server(WebSocketHandler()).metrics()
try:
    {access}
except ImportError as exc:
    print(type(exc).__name__, "|", exc)
""",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kind, _, message = result.stdout.strip().partition(" | ")
    assert kind == "ModuleNotFoundError"
    assert "pip install 'aiohttp-upgrade[metrics]'" in message


async def test_metrics_can_be_read_from_another_thread(serve: ServeFactory) -> None:
    """An exporter thread reading ``server.metrics()`` while the loop subscribes,
    unsubscribes, tracks and untracks thousands of topics never sees a dict
    changing size under it."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    errors: list[BaseException] = []
    done = threading.Event()

    def export() -> None:
        for _ in range(200_000):  # until the loop is done, bounded
            try:
                served.server.metrics()
            except BaseException as exc:
                errors.append(exc)
                return
            if done.is_set():
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    exporter = threading.Thread(target=export)
    exporter.start()
    try:
        for n in range(30_000):
            topic = f"topic {n % 3000}"
            ws.subscribe(topic)
            ws.track(topic, "key")
            if n % 3 == 0:
                for left in ws.subscriptions:
                    ws.unsubscribe(left)
                    ws.untrack(left)
            if errors:
                break
    finally:
        done.set()
        exporter.join()
        sys.setswitchinterval(interval)
    assert errors == []
    await raw.close()


async def test_opentelemetry_takes_one_snapshot_per_collection(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All instruments of one collection report one ``server.metrics()`` snapshot
    (consistent, and one read per collection from the exporter's thread)."""
    served = await serve(Recorder())
    server = served.server
    snapshots: list[Metrics] = []
    metrics = server.metrics

    def counted() -> Metrics:
        snapshots.append(metrics())
        return snapshots[-1]

    monkeypatch.setattr(server, "metrics", counted)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    observe_metrics(server, provider.get_meter("test"))
    for collections in (1, 2):
        reader.get_metrics_data()
        assert len(snapshots) == collections
    provider.shutdown()
