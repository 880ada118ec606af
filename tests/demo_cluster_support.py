"""The demo as several real worker processes sharing one SQLite file and one Redis.

Each :class:`DemoWorker` is ``python -m aiohttp.web ... demo.chat:init_app`` on its
own free port (as gunicorn workers would be, but addressable one by one), with the
same ``DEMO_DATA_DIR``, ``DEMO_SECRET`` and ``DEMO_REDIS_URL``. A worker is ready
when it prints "Running on", never after a sleep.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from .demo_support import SECRET, next_frame, wait_for

__all__ = [
    "HEARTBEAT",
    "REPO",
    "RUNNING",
    "START_TIMEOUT",
    "DemoWorker",
    "Person",
    "demo_env",
    "demo_worker",
    "demo_workers",
    "next_frame",
    "start_python",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent
RUNNING = re.compile(rb"Running on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT = 30.0
# Presence heartbeat of the test workers: a killed worker's people leave
# "Here now" within 4 times this.
HEARTBEAT = 0.5


class DemoWorker:
    """One running worker: its URL, its process, what it printed."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url
        self.output = bytearray()
        self._drain = asyncio.create_task(self._read_output())

    async def _read_output(self) -> None:
        # Keep reading: a full pipe would block the worker's logging.
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self.output += chunk

    def kill(self) -> None:
        """SIGKILL: no close frames, no cleanup, as in a crash."""
        if self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        """SIGINT (a clean stop), then wait for the process and its output."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self._drain


def demo_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """This process's environment without its ``DEMO_*`` variables, plus
    ``DEMO_DATA_DIR=data_dir``, unbuffered output and ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
    env.update(DEMO_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **variables)
    return env


async def start_python(
    *args: str, env: dict[str, str], stderr: int = asyncio.subprocess.STDOUT
) -> asyncio.subprocess.Process:
    """Start ``python args...`` in the repository with its stdout piped (stderr
    into it unless ``stderr`` says otherwise)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


@asynccontextmanager
async def demo_worker(
    data_dir: Path,
    redis_url: str | None,
    heartbeat: float = HEARTBEAT,
    cluster: bool = False,
) -> AsyncIterator[DemoWorker]:
    """Run one demo worker on a free loopback port until the block ends (on a
    Redis Cluster, ``redis_url`` a node of it, if ``cluster``)."""
    env = demo_env(
        data_dir,
        DEMO_SECRET=SECRET.decode(),
        DEMO_PRESENCE_HEARTBEAT=str(heartbeat),
    )
    if redis_url is not None:
        env["DEMO_REDIS_URL"] = redis_url
    if cluster:
        env["DEMO_REDIS_CLUSTER"] = "1"
    process = await start_python(
        *("-m", "aiohttp.web", "-H", "127.0.0.1", "-P", "0", "demo.chat:init_app"),
        env=env,
    )
    assert process.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while (match := RUNNING.search(seen)) is None:
                line = await process.stdout.readline()
                if not line:
                    raise AssertionError(f"the worker exited: {seen.decode()}")
                seen += line
    except BaseException:
        process.kill()
        await process.wait()
        raise
    worker = DemoWorker(process, match.group(1).decode())
    worker.output += seen
    try:
        yield worker
    finally:
        await worker.stop()


@asynccontextmanager
async def demo_workers(
    data_dir: Path, redis_url: str, cluster: bool = False
) -> AsyncIterator[tuple[DemoWorker, DemoWorker]]:
    """Run two demo workers sharing ``data_dir`` and Redis (a Redis Cluster if
    ``cluster``) until the block ends."""
    async with (
        demo_worker(data_dir, redis_url, cluster=cluster) as a,
        demo_worker(data_dir, redis_url, cluster=cluster) as b,
    ):
        yield a, b


class Person:
    """A person with a browser-like cookie jar, talking to any worker."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def sign_in(self, worker: DemoWorker, name: str) -> str:
        """Sign in as ``name`` through ``worker``; return where it redirected."""
        async with self.session.post(
            worker.url + "/sign-in", data={"name": name}, allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()
            return response.headers["Location"]

    async def sign_out(self, worker: DemoWorker) -> None:
        async with self.session.post(
            worker.url + "/sign-out", allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()

    async def connect(self, worker: DemoWorker) -> aiohttp.ClientWebSocketResponse:
        """Open the chat WebSocket on ``worker`` and consume its ``hello``."""
        ws = await self.session.ws_connect(worker.url + "/ws")
        hello = await next_frame(ws)
        assert hello["type"] == "hello", hello
        return ws
