"""The demo starts with the exact command line the README and ``make demo`` use."""

from __future__ import annotations

import asyncio
import shlex
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .demo_cluster_support import REPO, RUNNING, START_TIMEOUT, demo_env, start_python


@dataclass
class Demo:
    """A demo process: its URL, and its stderr once it has stopped."""

    url: str = ""
    stderr: bytes = b""
    returncode: int | None = None


LAUNCH = ("-m", "aiohttp.web", "-H", "127.0.0.1", "-P", "0", "demo.chat:init_app")


@asynccontextmanager
async def demo_process(data_dir: Path, *args: str) -> AsyncIterator[Demo]:
    """Run ``python -m aiohttp.web ... demo.chat:init_app`` on a free port (or
    ``python args...`` when given)."""
    process = await start_python(
        *(args or LAUNCH),
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


# -- what `make demo` installs --------------------------------------------------------

# Installed by `pip install -e .` alone; the single-process demo needs no more.
EXTRAS_NOT_NEEDED = ("redis", "hiredis", "gunicorn", "playwright", "uvloop")


def make_dry_run(target: str, venv: Path) -> list[str]:
    """The commands ``make <target>`` would run with ``VENV=venv``."""
    result = subprocess.run(
        ["make", "-n", "-C", str(REPO), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def installs(commands: list[str]) -> list[str]:
    """What the ``pip install`` commands among ``commands`` install (pip aside)."""
    return [
        shlex.split(command)[-1]
        for command in commands
        if " pip install " in command and "--upgrade pip" not in command
    ]


def test_make_demo_installs_the_package_alone(tmp_path: Path) -> None:
    """`make demo` installs the package without extras, under its own marker."""
    commands = make_dry_run("demo", tmp_path / "venv")
    assert installs(commands) == ["."]
    assert f"touch {tmp_path / 'venv' / '.installed-demo'}" in commands


def test_make_demo_cluster_installs_the_demo_extra(tmp_path: Path) -> None:
    """`make demo-cluster` installs the demo extra (gunicorn, redis), no more."""
    assert installs(make_dry_run("demo-cluster", tmp_path / "venv")) == [".[demo]"]


def test_make_test_still_installs_every_extra(tmp_path: Path) -> None:
    """`make lint` (a part of `make test`) still installs the test and demo extras."""
    (target,) = installs(make_dry_run("lint", tmp_path / "venv"))
    extras = set(target.removeprefix(".[").removesuffix("]").split(","))
    assert {"test", "demo", "redis"} <= extras


def test_demo_marker_does_not_stand_for_the_test_install(tmp_path: Path) -> None:
    """After `make demo`, `make test` still installs its extras into the same venv."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed-demo").touch()
    assert installs(make_dry_run("demo", venv)) == []
    assert len(installs(make_dry_run("lint", venv))) == 1


async def test_demo_runs_without_any_extra(tmp_path: Path) -> None:
    """The single-process demo serves its page with every extra unimportable."""
    blocked = ", ".join(repr(name) for name in EXTRAS_NOT_NEEDED)
    boot = (
        "import runpy, sys\n"
        f"sys.modules.update(dict.fromkeys([{blocked}]))\n"
        "sys.argv[1:] = ['-H', '127.0.0.1', '-P', '0', 'demo.chat:init_app']\n"
        "runpy.run_module('aiohttp.web', run_name='__main__')\n"
    )
    async with (
        demo_process(tmp_path / "data", "-c", boot) as demo,
        aiohttp.ClientSession() as session,
        session.get(demo.url) as response,
    ):
        assert response.status == 200
