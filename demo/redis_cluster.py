"""A private Redis Cluster for ``DEMO_REDIS_CLUSTER=1 make demo-cluster``.

Six ``redis-server --cluster-enabled yes`` on free loopback ports, without
persistence, each logging to a file in one temporary directory, made a cluster
of 3 primaries with one replica each by ``redis-cli --cluster create``. Nothing
here is for production: a real cluster runs its nodes on several hosts.

This module imports nothing from :mod:`demo.cluster`, which runs as
``__main__`` (an import would make a second copy of it, and of its
exception class).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

__all__ = [
    "CLUSTER_NODES",
    "CLUSTER_START_TIMEOUT",
    "RedisClusterError",
    "local_redis_cluster",
]

CLUSTER_NODES: Final = 6  # 3 primaries, 3 replicas
CLUSTER_START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 30.0
READY: Final = b"Ready to accept connections"


class RedisClusterError(RuntimeError):
    """The private cluster cannot start (no binary, a node or the cluster did
    not come up)."""


@contextmanager
def local_redis_cluster(
    redis_server: str | None = None, redis_cli: str | None = None
) -> Iterator[str]:
    """Run a private Redis Cluster on loopback ports; yield the URL of one of
    its nodes (the seed); stop every node on exit.

    Raises:
        RedisClusterError: no ``redis-server`` or ``redis-cli`` binary, a node did
            not start, or the cluster did not form.
    """
    server = _binary(redis_server, "redis-server")
    cli = _binary(redis_cli, "redis-cli")
    with ExitStack() as stack:
        workdir = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(prefix="demo-redis-cluster-")
            )
        )
        ports: list[int] = []
        for number in range(CLUSTER_NODES):
            port = _free_port(exclude=ports)
            ports.append(port)
            stack.enter_context(_node(server, port, workdir / f"node{number}"))
        _create(cli, ports)
        _wait_until(lambda: all(_cluster_ok(cli, p) for p in ports), "cluster_state:ok")
        listed = ", ".join(map(str, ports))
        print(
            f"demo-cluster: Redis Cluster (3 primaries, 3 replicas) on 127.0.0.1 "
            f"ports {listed}",
            flush=True,
        )
        yield f"redis://127.0.0.1:{ports[0]}"


def _binary(given: str | None, name: str) -> str:
    binary = given or shutil.which(name)
    if binary is None or not os.path.exists(binary):
        raise RedisClusterError(
            f"{name} not found: install redis-server 7 or newer (apt-get install "
            "redis-server), or set DEMO_REDIS_URL to a node of your cluster"
        )
    return binary


def _free_port(exclude: list[int]) -> int:
    """A loopback port that was free a moment ago, not in ``exclude``."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port


@contextmanager
def _node(binary: str, port: int, directory: Path) -> Iterator[None]:
    """One cluster-enabled ``redis-server``, running until the block ends."""
    directory.mkdir()
    log = directory / "redis.log"
    bus_port = _free_port(exclude=[port])
    process = subprocess.Popen(
        [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1"),
            # Its own bus port: port + 10000 may be taken, or out of range.
            *("--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
            *("--cluster-config-file", str(directory / "nodes.conf")),
            *("--dir", str(directory), "--logfile", str(log)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # as local_redis: stopped after gunicorn
    )
    try:
        _wait_until(
            lambda: _started(process, log), f"redis-server on port {port} to start"
        )
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _started(process: subprocess.Popen[bytes], log: Path) -> bool:
    """True once the node accepts connections; raise if it exited."""
    text = log.read_bytes() if log.exists() else b""
    if READY in text:
        return True
    if process.poll() is not None:
        tail = b"\n".join(text.splitlines()[-10:]).decode(errors="replace")
        raise RedisClusterError(f"redis-server exited: {tail or '(no log)'}")
    return False


def _create(cli: str, ports: list[int]) -> None:
    result = subprocess.run(
        [
            cli,
            *("--cluster", "create", *(f"127.0.0.1:{port}" for port in ports)),
            *("--cluster-replicas", "1", "--cluster-yes"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLUSTER_START_TIMEOUT,
    )
    if result.returncode != 0 or "All 16384 slots covered" not in result.stdout:
        raise RedisClusterError(
            f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
        )


def _cluster_ok(cli: str, port: int) -> bool:
    result = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLUSTER_START_TIMEOUT,
    )
    return "cluster_state:ok" in result.stdout


def _wait_until(ready: Callable[[], bool], what: str) -> None:
    """Poll ``ready`` (the state of other processes, which send no event)."""
    deadline = time.monotonic() + CLUSTER_START_TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            raise RedisClusterError(f"timed out waiting for {what}")
        time.sleep(0.02)
