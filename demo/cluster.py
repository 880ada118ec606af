"""``make demo-cluster``: the chat on several gunicorn workers sharing SQLite and Redis.

Run it with::

    python -m demo.cluster --workers 2 --host 127.0.0.1 --port 8080

It starts a ``redis-server`` of its own on a free loopback port unless
``DEMO_REDIS_URL`` names one (that Redis is then used and left alone), makes up a
``DEMO_SECRET`` for this run unless one is set (every worker must sign cookies
with the same key), and runs gunicorn's aiohttp worker on one port::

    gunicorn demo.chat:gunicorn_app -k aiohttp.GunicornWebWorker -w 2 -b HOST:PORT

With ``DEMO_REDIS_CLUSTER=1`` the workers use a Redis Cluster (sharded pub/sub):
the one ``DEMO_REDIS_URL`` names a node of, else a private one of 6 nodes (3
primaries, 3 replicas) started for the run (:mod:`demo.redis_cluster`).

Ctrl+C (or SIGTERM) stops gunicorn, then the Redis it started. Needs the
``demo`` extra (gunicorn, redis-py) and, without ``DEMO_REDIS_URL``, Debian's
``redis-server`` (7 or newer for a cluster).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .config import ConfigError, redis_cluster_setting
from .redis_cluster import RedisClusterError, local_redis_cluster

__all__ = [
    "DEFAULT_WORKERS",
    "LauncherError",
    "gunicorn_command",
    "local_redis",
    "main",
    "worker_env",
]

DEFAULT_WORKERS = 2
REDIS_START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0


class LauncherError(RuntimeError):
    """The cluster cannot start (no redis-server, Redis did not come up...)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_redis(redis_server: str | None = None) -> Iterator[str]:
    """Run a private ``redis-server`` on a free loopback port, without persistence;
    yield its URL; stop it on exit.

    Raises:
        LauncherError: no ``redis-server`` binary, or it did not start.
    """
    binary = redis_server or shutil.which("redis-server")
    if binary is None or not os.path.exists(binary):
        raise LauncherError(
            "redis-server not found: install it (apt-get install redis-server) "
            "or set DEMO_REDIS_URL to a Redis of yours"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="demo-redis-") as workdir:
        process = subprocess.Popen(
            [
                binary,
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", workdir),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Out of the terminal's process group: Ctrl+C stops gunicorn first,
            # and Redis only once the workers have said goodbye through it.
            start_new_session=True,
        )
        try:
            _wait_ready(process)
            print(f"demo-cluster: redis-server on 127.0.0.1:{port}", flush=True)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


def _wait_ready(process: subprocess.Popen[bytes]) -> None:
    """Read redis-server's log until it accepts connections."""
    assert process.stdout is not None
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    seen = b""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise LauncherError(f"redis-server exited: {seen.decode(errors='replace')}")
        seen += line
        if b"Ready to accept connections" in line:
            return
    raise LauncherError("redis-server did not start in time")


def worker_env(env: Mapping[str, str], redis_url: str) -> dict[str, str]:
    """The environment of the workers: ``env`` with ``DEMO_REDIS_URL`` and a
    ``DEMO_SECRET`` (made up for this run when ``env`` has none)."""
    result = dict(env)
    result["DEMO_REDIS_URL"] = redis_url
    if not result.get("DEMO_SECRET"):
        result["DEMO_SECRET"] = secrets.token_urlsafe(32)
        print(
            "demo-cluster: DEMO_SECRET is not set: made one up for this run "
            "(everybody is signed out when it restarts)",
            flush=True,
        )
    return result


def gunicorn_command(workers: int, host: str, port: int) -> list[str]:
    """The gunicorn command line of the demo's workers."""
    return [
        sys.executable,
        *("-m", "gunicorn", "demo.chat:gunicorn_app"),
        *("--worker-class", "aiohttp.GunicornWebWorker"),
        *("--workers", str(workers), "--bind", f"{host}:{port}"),
        # Workers must shut down within the graceful timeout; sockets close at once.
        *("--graceful-timeout", "10"),
        # No ~/.gunicorn/gunicorn.ctl: two clusters on one machine would share it.
        "--no-control-socket",
    ]


def run(workers: int, host: str, port: int, env: Mapping[str, str]) -> int:
    """Run gunicorn (and a local Redis when ``env`` names none) until it exits or
    this process gets SIGINT/SIGTERM; return gunicorn's exit status."""
    with _redis_for(env) as redis_url:
        process = subprocess.Popen(
            gunicorn_command(workers, host, port),
            env=worker_env(env, redis_url),
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,  # signals reach it through stop() only
        )

        def stop(signum: int, frame: object) -> None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

        previous = {
            sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if process.poll() is None:
                process.kill()
                process.wait()


@contextmanager
def _redis_for(env: Mapping[str, str]) -> Iterator[str]:
    configured = env.get("DEMO_REDIS_URL", "").strip()
    if configured:
        yield configured
        return
    start = local_redis_cluster if redis_cluster_setting(env) else local_redis
    with start() as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the cluster."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.cluster",
        description="The chat demo on several gunicorn workers sharing SQLite "
        "and Redis; DEMO_REDIS_URL picks a Redis (else a private one is started), "
        "DEMO_REDIS_CLUSTER=1 makes it a Redis Cluster.",
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        redis_cluster_setting(os.environ)  # a bad value stops before anything starts
        return run(args.workers, args.host, args.port, os.environ)
    except (LauncherError, RedisClusterError, ConfigError) as exc:
        print(f"demo-cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
