"""The broker's background tasks: their supervision, the heartbeat, and the
watchdog that detects a Redis that stopped answering."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ._config import WATCHDOG_TICKS, Config, Counters, Wakeup
from ._counts import Counts
from ._reader import Reader
from ._writer import Writer

__all__ = ["Heartbeat", "Supervisor", "Watchdog"]

logger = logging.getLogger("aiohttp_upgrade")

_Run = Callable[[], Awaitable[None]]


class Supervisor:
    """Runs the broker's tasks and restarts one that fails unexpectedly."""

    def __init__(self, config: Config, counters: Counters) -> None:
        self.config = config
        self.counters = counters

    def spawn(self, name: str, run: _Run, reset: _Run | None) -> asyncio.Task[None]:
        """Start ``run`` as the task ``name``, supervised."""
        return asyncio.create_task(
            self._supervise(name, run, reset), name=f"RedisBroker {name}"
        )

    async def _supervise(self, name: str, run: _Run, reset: _Run | None) -> None:
        """Run ``run`` until it returns. An exception it does not handle is a
        bug: log it with its traceback, count it, ``reset`` the task's state
        and run it again after a backoff (growing while it keeps failing)."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                await run()
                return
            except Exception as exc:
                self.counters.task_failures += 1
                logger.error(
                    "RedisBroker %s task failed; restarting it (counted in "
                    "RedisBroker.task_failures)",
                    name,
                    exc_info=exc,
                )
            if reset is not None:
                try:
                    await reset()
                except Exception:
                    logger.exception("RedisBroker: resetting the %s task failed", name)
            if loop.time() - started > self.config.backoff_cap:
                failures = 0  # it ran a while: a new fault, not the same one
            await asyncio.sleep(self.config.backoff(failures))
            failures += 1


class Heartbeat:
    """Every ``heartbeat_interval``: has the writer refresh our registration,
    and PINGs the reader's connection (the watchdog checks the answer)."""

    def __init__(
        self, config: Config, counts: Counts, reader: Reader, wakeup: Wakeup
    ) -> None:
        self.config = config
        self.counts = counts
        self.reader = reader
        self.wakeup = wakeup

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            self.counts.heartbeat_due = True
            self.wakeup.wake()
            await self.reader.ping()


class Watchdog:
    """Checks for a stalled Redis ``WATCHDOG_TICKS`` times per ``stall_timeout``,
    whatever the writer and the reader are blocked on."""

    def __init__(self, config: Config, writer: Writer, reader: Reader) -> None:
        self.config = config
        self.writer = writer
        self.reader = reader

    async def run(self) -> None:
        """Watch until cancelled."""
        while True:
            await asyncio.sleep(self.config.stall_timeout / WATCHDOG_TICKS)
            self.check_stalls()

    def check_stalls(self) -> None:
        """Declare a connection dead when Redis has owed it an answer for
        ``stall_timeout``: a pipeline of the writer, or a PING of the reader."""
        now = asyncio.get_running_loop().time()
        limit = self.config.stall_timeout
        self.writer.check_stall(now, limit)
        self.reader.check_stall(now, limit)
