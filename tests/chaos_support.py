"""The history chaos run, shared by benchmarks/chaos_history.py (the full size) and
tests/test_history_chaos.py (scaled down to fit a test).

Real processes: a redis-server and N workers (``tests/history_app.py`` under
``python -m aiohttp.web`` with a ``RedisBroker``). In this process: clients in a
few rooms, each connected to a random live worker, dropping its connection at
random and resuming from the last position it saw on a random live worker after
a random time offline; publishers (one per worker) sending messages to the rooms
through their worker; one worker killed with SIGKILL partway through. At the end
every client is online, and each must have received every offset of its room
after the position it started from, once and in order.

Each client checks its stream as it goes: an offset below the next expected one
is a duplicate, an offset above it a gap (of that many). A resume answered
``recovered False`` (outside the history window) restarts the client's count at
the position it is given and is reported apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

from .redis_support import RedisProcess, _wait_for_line

__all__ = ["ChaosReport", "Worker", "run_chaos"]

ROOT: Final = Path(__file__).resolve().parent.parent
RUNNING: Final = re.compile(r"Running on http://([\d.]+):(\d+)")


class Worker:
    """``tests/history_app.py`` in a process of its own, on 127.0.0.1."""

    def __init__(self, redis_url: str, size: int) -> None:
        env = dict(os.environ, HISTORY_REDIS_URL=redis_url, HISTORY_SIZE=str(size))
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        command = [sys.executable, "-m", "aiohttp.web", "-H", "127.0.0.1", "-P", "0"]
        self.process = subprocess.Popen(
            [*command, "tests.history_app:init_app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        match, seen = _wait_for_line(self.process, RUNNING, "history worker")
        self.port = int(match.group(2))
        self.output = [seen]
        self.alive = True
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := os.read(self.process.stdout.fileno(), 65536):
            self.output.append(chunk.decode(errors="replace"))

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.alive = False
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=15)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        self._drain.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@dataclass
class ChaosReport:
    """What a chaos run saw."""

    clients: int = 0
    rooms: int = 0
    published: int = 0  # offsets assigned, all rooms
    delivered: int = 0
    gaps: int = 0
    duplicates: int = 0
    other_epoch: int = 0  # messages of an epoch the client was never told of
    resumes: int = 0
    recovered: int = 0
    not_recovered: int = 0  # outside the window (a reload for a real client)
    unfinished: int = 0  # clients that did not reach their room's last offset
    killed: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"clients {self.clients} in {self.rooms} rooms; workers killed {self.killed}",
            f"messages published {self.published}, delivered {self.delivered} "
            f"in {self.seconds:.1f} s",
            f"resumes {self.resumes}: recovered {self.recovered}, outside the "
            f"window {self.not_recovered} {self.reasons or ''}",
            f"gaps {self.gaps}  duplicates {self.duplicates}  of an unknown epoch "
            f"{self.other_epoch}  unfinished clients {self.unfinished}",
        ]


class Client:
    """One chaos client: a room, the next offset it expects, its counts."""

    def __init__(self, room: str, report: ChaosReport) -> None:
        self.room = room
        self.report = report
        self.epoch = ""
        self.next = 0  # 0: no position yet
        self.seen = 0

    def on_line(self, line: str) -> None:
        if line.startswith("resumed "):
            self._on_resumed(line)
            return
        position, _, _ = line.partition("|")
        epoch, _, offset_text = position.partition(":")
        offset = int(offset_text)
        report = self.report
        report.delivered += 1
        if epoch != self.epoch:
            report.other_epoch += 1
            return
        if offset < self.next:
            report.duplicates += 1
        elif offset > self.next:
            report.gaps += offset - self.next
            self.next = offset + 1
        else:
            self.next = offset + 1

    def _on_resumed(self, line: str) -> None:
        _, recovered, position, _, reason = line.split(" ")
        report = self.report
        report.resumes += 1
        epoch, _, offset = position.partition(":")
        if recovered == "True":
            report.recovered += 1
            if not self.epoch:
                self.epoch, self.next = epoch, int(offset) + 1
            return
        report.not_recovered += 1
        report.reasons[reason] = report.reasons.get(reason, 0) + 1
        self.epoch, self.next = epoch, int(offset) + 1

    @property
    def since(self) -> str:
        return f"{self.epoch}:{self.next - 1}" if self.epoch else ""


async def _session(
    client: Client,
    http: aiohttp.ClientSession,
    worker: Worker,
    online: float | None,
) -> None:
    """One connection of ``client``: resume, read for ``online`` seconds (None:
    until cancelled), leave."""
    async with http.ws_connect(worker.ws_url, max_msg_size=0) as ws:
        await ws.send_str(f"resume {client.room} {client.since}".rstrip())
        deadline = None if online is None else time.monotonic() + online
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                msg = await asyncio.wait_for(ws.receive(), timeout)
            except TimeoutError:
                return
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return  # closed (its worker killed): go offline
            client.on_line(msg.data)


def _live(workers: list[Worker]) -> Worker:
    return random.choice([worker for worker in workers if worker.alive])


async def _churn(
    client: Client,
    http: aiohttp.ClientSession,
    workers: list[Worker],
    stop: asyncio.Event,
    offline: tuple[float, float],
) -> None:
    """Connect, stay a while, drop, stay offline 0.1-3 s, resume elsewhere..."""
    while not stop.is_set():
        # A worker killed while connecting: try another one.
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await _session(client, http, _live(workers), random.uniform(0.5, 4.0))
        if not stop.is_set():
            await asyncio.sleep(random.uniform(*offline))


async def _publish(
    workers: list[Worker],
    http: aiohttp.ClientSession,
    rooms: list[str],
    total: int,
    rate: float,
    sent: list[int],
    stop: asyncio.Event,
    reached: tuple[int, asyncio.Event],
) -> None:
    """Send ``total`` messages at ``rate``/s, round robin over the rooms, in
    batches, through a live worker (another one when it dies)."""
    batch = max(1, int(rate / 100))
    while sent[0] < total and not stop.is_set():
        try:
            async with http.ws_connect(_live(workers).ws_url) as ws:
                while sent[0] < total:
                    started = time.monotonic()
                    for _ in range(min(batch, total - sent[0])):
                        room = rooms[sent[0] % len(rooms)]
                        await ws.send_str(f"spub {room} m{sent[0]}")
                        sent[0] += 1
                    if sent[0] >= reached[0]:
                        reached[1].set()
                    await asyncio.sleep(
                        max(0.0, batch / rate - (time.monotonic() - started))
                    )
        except (aiohttp.ClientError, OSError, ConnectionError):
            await asyncio.sleep(0.05)


async def _last_offsets(
    http: aiohttp.ClientSession, worker: Worker, rooms: list[str]
) -> dict[str, tuple[str, int]]:
    result = {}
    for room in rooms:
        url = f"http://127.0.0.1:{worker.port}/history"
        async with http.get(url, params={"topic": room, "limit": "1"}) as response:
            body = await response.json()
        epoch, _, offset = body["position"].partition(":")
        result[room] = (epoch, int(offset))
    return result


async def run_chaos(
    *,
    clients: int,
    rooms: int,
    messages: int,
    rate: float,
    workers: int = 3,
    offline: tuple[float, float] = (0.1, 3.0),
    kill_at: float = 0.4,
    size: int = 100_000,
    settle: float = 60.0,
) -> ChaosReport:
    """Run the chaos described in the module docstring; return its report."""
    report = ChaosReport(clients=clients, rooms=rooms)
    names = [f"h:chaos{index}" for index in range(rooms)]
    redis = RedisProcess()
    redis.start()
    started = [Worker(redis.url, size) for _ in range(workers)]
    connector = aiohttp.TCPConnector(limit=0)
    stop = asyncio.Event()
    sent = [0]
    begin = time.monotonic()
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            chaos = [Client(names[index % rooms], report) for index in range(clients)]
            tasks = [
                asyncio.create_task(_churn(client, http, started, stop, offline))
                for client in chaos
            ]
            reached = asyncio.Event()
            publisher = asyncio.create_task(
                _publish(
                    *(started, http, names, messages, rate, sent, stop),
                    (int(messages * kill_at), reached),
                )
            )
            await reached.wait()
            started[0].kill()
            report.killed = 1
            await publisher
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _settle(report, chaos, http, started, names, settle)
    finally:
        report.seconds = time.monotonic() - begin
        for worker in started:
            worker.stop()
        redis.kill()
    return report


async def _settle(
    report: ChaosReport,
    chaos: list[Client],
    http: aiohttp.ClientSession,
    workers: list[Worker],
    names: list[str],
    within: float,
) -> None:
    """Bring every client online and wait until each has its room's last offset."""
    live = [worker for worker in workers if worker.alive]
    await asyncio.sleep(0.5)  # let the last publishes through Redis
    last = await _last_offsets(http, live[0], names)
    report.published = sum(offset for _, offset in last.values())
    deadline = time.monotonic() + within

    async def finish(client: Client) -> None:
        epoch, offset = last[client.room]
        try:
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                while client.next <= offset or client.epoch != epoch:
                    await _session(client, http, random.choice(live), 1.0)
        except TimeoutError:
            report.unfinished += 1
            report.gaps += max(0, offset + 1 - client.next)

    await asyncio.gather(*(finish(client) for client in chaos))
