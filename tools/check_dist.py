"""Install a built wheel and the sdist, each into a clean virtualenv, serve the quick
start from each and answer it with a client.

Usage: python tools/check_dist.py dist/aiohttp_upgrade-*.whl dist/aiohttp_upgrade-*.tar.gz

For each, in a temporary directory, this creates a virtualenv, installs the
package (and its dependencies, nothing else), and re-runs itself there with
``python -I``, so the source tree cannot be imported by accident. The wheel must
run its compiled twins (``_speedups.COMPILED``, extension modules in
site-packages). The sdist is built with ``CC=false``, a C compiler that always
fails: its build must print the one line that says the extensions were not built,
and the package must run pure Python. Inside, it checks that the package
comes from the virtualenv's site-packages with its ``py.typed``, serves
``examples/quickstart.py`` on a free loopback port with ``web.run_app``, connects
two clients that greet and hear each other, then stops the server with SIGINT and
checks that the clients get the 1001 close of a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
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


FALLBACK_LINE = "aiohttp-upgrade: C extensions not built ("
FORCE_PURE = ("AIOHTTP_UPGRADE_NO_EXTENSIONS", "AIOHTTP_NO_EXTENSIONS")


def outside(artifact: Path) -> None:
    """Make the clean virtualenv, install ``artifact`` into it, run the check inside."""
    sdist = artifact.name.endswith(".tar.gz")
    if sdist and zipfile.is_zipfile(artifact):  # make dist builds it again first
        raise SystemExit(f"{artifact.name}: pip would unpack it as a zip archive")
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and k not in FORCE_PURE
    }
    with tempfile.TemporaryDirectory(prefix="check-dist-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        install = [str(python), "-m", "pip", "install", "--no-cache-dir"]
        if sdist:  # -v: pip shows the build's output only when asked
            installed = subprocess.run(
                [*install, "-v", str(artifact.resolve())],
                check=True,
                env=env | {"CC": "false"},
                capture_output=True,
                text=True,
            )
            lines = [
                line.strip()
                for line in installed.stdout.splitlines()
                + installed.stderr.splitlines()
                if FALLBACK_LINE in line
            ]
            assert len(lines) == 1, f"not one fallback line: {lines}"
            print(f"the sdist built without a compiler: {lines[0]}")
        else:
            subprocess.run([*install, "-q", str(artifact.resolve())], check=True)
        shutil.copy(QUICK_START, tmp)
        subprocess.run(
            [str(python), "-I", str(Path(__file__).resolve()), "--inside"]
            + (["pure"] if sdist else ["compiled"]),
            check=True,
            cwd=tmp,
            env=env,
        )


def check_installed(expected: str) -> None:
    """The package is the artifact's, in this virtualenv, typed, and runs compiled
    (the wheel) or pure Python (the sdist built without a compiler)."""
    import aiohttp_upgrade
    from aiohttp_upgrade import _speedups

    package = Path(aiohttp_upgrade.__file__).parent
    site = Path(sysconfig.get_paths()["purelib"])
    assert package.parent == site, f"imported from {package}, not {site}"
    assert (package / "py.typed").is_file(), "the package lacks py.typed"
    twins = sorted(
        path.name
        for path in package.iterdir()
        if path.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    )
    if expected == "compiled":
        assert _speedups.COMPILED, "the wheel's compiled twins are not in use"
        assert len(twins) == len(_speedups.MODULES), twins
        for name in _speedups.MODULES:
            module = sys.modules[f"aiohttp_upgrade.{name}_c"]
            assert module.__file__ is not None
            assert Path(module.__file__).parent == package, module.__file__
    else:
        assert not _speedups.COMPILED, "compiled without a compiler?"
        assert twins == [], twins
    print(f"aiohttp-upgrade {aiohttp_upgrade.__version__} from {package}: {expected}")


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


def inside(expected: str) -> None:
    signal.alarm(120)  # a hung server or client fails the check instead of CI
    check_installed(expected)
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
    if sys.argv[1:2] == ["--inside"] and len(sys.argv) == 3:
        inside(sys.argv[2])
    elif len(sys.argv) > 1:
        for artifact in sys.argv[1:]:
            outside(Path(artifact))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
