"""Install a built wheel into a clean virtualenv, serve the quick start from it and
answer it with a client.

Usage: python tools/check_dist.py dist/aiohttp_upgrade-*.whl

In a temporary directory this creates a virtualenv, installs the wheel (and its
dependencies, nothing else), and re-runs itself there with ``python -I``, so the
source tree cannot be imported by accident. Inside, it checks that the package
comes from the virtualenv's site-packages with its ``py.typed``, serves
``examples/quickstart.py`` on a free loopback port with ``web.run_app``, connects
two clients that greet and hear each other, then stops the server with SIGINT and
checks that the clients get the 1001 close of a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
QUICK_START = ROOT / "examples" / "quickstart.py"
SERVE = """
import runpy, sys
from aiohttp import web
app = runpy.run_path(sys.argv[1], run_name="quickstart")["app"]
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def outside(wheel: Path) -> None:
    """Make the clean virtualenv, install ``wheel`` into it, run the check inside."""
    with tempfile.TemporaryDirectory(prefix="check-dist-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(wheel.resolve())],
            check=True,
        )
        shutil.copy(QUICK_START, tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run(
            [str(python), "-I", str(Path(__file__).resolve()), "--inside"],
            check=True,
            cwd=tmp,
            env=env,
        )


def check_installed() -> None:
    """The package is the wheel's, in this virtualenv, and typed."""
    import aiohttp_upgrade

    package = Path(aiohttp_upgrade.__file__).parent
    site = Path(sysconfig.get_paths()["purelib"])
    assert package.parent == site, f"imported from {package}, not {site}"
    assert (package / "py.typed").is_file(), "the wheel lacks py.typed"
    print(f"aiohttp-upgrade {aiohttp_upgrade.__version__} from {package}")


async def talk_to(port: int, server: subprocess.Popen[str]) -> None:
    url = f"http://127.0.0.1:{port}/ws"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, params={"user": "ada"}) as ada,
        session.ws_connect(url, params={"user": "bob"}) as bob,
    ):
        assert await ada.receive_str(timeout=10) == "hello ada"
        assert await bob.receive_str(timeout=10) == "hello bob"
        await ada.send_str("hi bob")
        assert await bob.receive_str(timeout=10) == "hi bob"
        server.send_signal(signal.SIGINT)
        for ws in (ada, bob):
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE, message
            assert message.data == 1001, message
    print(f"quick start served on port {port}: greeted, relayed, closed with 1001")


def inside() -> None:
    signal.alarm(120)  # a hung server or client fails the check instead of CI
    check_installed()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-I", "-u", "-c", SERVE, "quickstart.py", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # run_app's "Running on ..." once listening
        assert f":{port}" in line, f"server did not start: {line!r}"
        asyncio.run(talk_to(port, server))
        assert server.wait(timeout=10) == 0, "the server did not exit cleanly"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main() -> None:
    if sys.argv[1:] == ["--inside"]:
        inside()
    elif len(sys.argv) == 2:
        outside(Path(sys.argv[1]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
