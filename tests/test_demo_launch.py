"""The demo starts with the exact command line the README and ``make demo`` use."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .demo_cluster_support import RUNNING, START_TIMEOUT, demo_env, start_python


@dataclass
class Demo:
    """A demo process: its URL, and its stderr once it has stopped."""

    url: str = ""
    stderr: bytes = b""
    returncode: int | None = None


@asynccontextmanager
async def demo_process(data_dir: Path) -> AsyncIterator[Demo]:
    """Run ``python -m aiohttp.web ... demo.chat:init_app`` on a free port."""
    process = await start_python(
        *("-m", "aiohttp.web", "-H", "127.0.0.1", "-P", "0", "demo.chat:init_app"),
        env=demo_env(data_dir),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    demo = Demo()
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while (match := RUNNING.search(await process.stdout.readline())) is None:
                if process.stdout.at_eof():
                    raise AssertionError("the demo exited before it started")
        demo.url = match.group(1).decode()
        yield demo
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                _, demo.stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            _, demo.stderr = await process.communicate()
        demo.returncode = process.returncode


async def test_documented_command_serves_the_sign_in_page(tmp_path: Path) -> None:
    """The documented launch line serves the app and creates the database."""
    async with demo_process(tmp_path / "data") as demo:
        async with (
            aiohttp.ClientSession() as session,
            session.get(demo.url) as response,
        ):
            assert response.status == 200
            assert 'action="/sign-in"' in await response.text()
        assert (tmp_path / "data" / "chat.sqlite3").is_file()


async def test_missing_secret_is_generated_and_logged(tmp_path: Path) -> None:
    """Without DEMO_SECRET the demo still starts and says it generated one."""
    async with demo_process(tmp_path / "data") as demo:
        pass
    assert b"DEMO_SECRET is not set" in demo.stderr


async def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    """Ctrl+C (SIGINT) shuts the demo down with exit status 0 and no traceback."""
    async with demo_process(tmp_path / "data") as demo:
        pass
    assert demo.returncode == 0
    assert b"Traceback" not in demo.stderr
