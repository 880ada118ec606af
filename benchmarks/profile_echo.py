"""Profile: where an echo round trip's microseconds go on the server.

Runs the echo server of ``benchmarks/echo.py`` (aiohttp-upgrade with a
``def message`` hook unless ``--server`` says otherwise) in a child process
pinned to CPU 0, and 50 clients (raw asyncio protocols, on uvloop when
installed) in this process pinned to CPU 1, each keeping one 32-byte text
message in flight. After a warm-up it runs a fixed number of round trips three
times per phase, the clients idle in between:

1. plain: the server's CPU time (utime + stime from ``/proc/<pid>/stat``) per
   message, without any instrumentation: the scale for what follows;
2. under cProfile (switched on and off in the server by SIGUSR1 and SIGUSR2):
   per function, calls per message and µs per message (tottime and cumtime
   divided by the messages), the top ``--top`` by tottime, and the server's CPU
   per message under the profiler;
3. once, under ``strace -c -f -p`` when strace is installed: system calls per
   message.

Phases 1 and 2 alternate for ``--rounds`` rounds; the profile adds up its rounds.

cProfile times every call of a Python function, which inflates small functions
most: read its µs as shares of the profiled total, and the plain CPU per
message, split into user and kernel (system) time, as the real cost: the
kernel's part is the system calls, which the profile books to ``send``,
``recv`` and ``poll``. Its clock is wall time, so the poll line includes the
wait for the clients (it is left out of the shares), and time the server
spends preempted by other processes on its CPU inflates every line alike.

The server is in malloc's steady state (``_common.settle_malloc``), as after a
connection has closed; a fresh asyncio server pays more per read (issue 17).

Usage: python benchmarks/profile_echo.py [--messages 100000] [--top 25] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    CLIENT_CPU,
    CLK_TCK,
    RawClient,
    ServerProcess,
    client_frame,
    close_clients,
    connect_clients,
    cpu_times,
    install_uvloop,
    pin,
    print_table,
    serve_app,
    spread,
)
from echo import APPS, LABELS

SCRIPT: Final = os.path.abspath(__file__)
PROFILING: Final = "PROFILING"
DUMPED: Final = "DUMPED"
WARM_UP_MESSAGES: Final = 20_000


# -- the server (runs in the child process) --------------------------------------


async def serve(impl: str, dump_path: str) -> None:
    """Serve echo.py's ``impl`` app; SIGUSR1 starts the profiler, SIGUSR2 stops
    it and writes its stats to ``dump_path``; each acknowledged on stdout."""
    loop = asyncio.get_running_loop()
    profiler = cProfile.Profile()

    def start() -> None:
        profiler.enable()
        print(PROFILING, flush=True)

    def stop() -> None:
        profiler.disable()
        profiler.dump_stats(dump_path)
        print(DUMPED, flush=True)

    loop.add_signal_handler(signal.SIGUSR1, start)
    loop.add_signal_handler(signal.SIGUSR2, stop)
    await serve_app(APPS[impl](), backlog=1024)


# -- load generator -----------------------------------------------------------------


class CountedClient(RawClient):
    """Keeps one message in flight until it has had ``count`` echoes."""

    def __init__(self, port: int, size: int) -> None:
        super().__init__("127.0.0.1", port, "/")
        self.frame = client_frame(b"e" * size, mask=os.urandom(4))
        self.reply_size = (2 if size < 126 else 4) + size
        self.pending = 0
        self.remaining = 0
        self.finished: asyncio.Future[None] | None = None
        self.on_data = self.received

    def run(self, count: int) -> asyncio.Future[None]:
        self.remaining = count
        self.finished = asyncio.get_running_loop().create_future()
        self.send(self.frame)
        return self.finished

    def received(self, data: bytes) -> None:
        self.pending += len(data)
        if self.pending < self.reply_size:
            return
        assert self.pending == self.reply_size, "one message in flight"
        self.pending = 0
        self.remaining -= 1
        if self.remaining:
            self.send(self.frame)
        elif self.finished is not None:
            self.finished.set_result(None)


async def round_trips(clients: list[CountedClient], messages: int) -> int:
    """Run ``messages`` round trips spread over the clients; return the count."""
    each = max(1, messages // len(clients))
    await asyncio.gather(*(client.run(each) for client in clients))
    return each * len(clients)


async def cpu_per_message(
    server: ServerProcess, clients: list[CountedClient], messages: int
) -> tuple[float, float]:
    """Server user and kernel CPU µs per message over ``messages`` round trips."""
    user0, system0 = cpu_times(server.pid)
    done = await round_trips(clients, messages)
    user1, system1 = cpu_times(server.pid)
    return (user1 - user0) / done * 1e6, (system1 - system0) / done * 1e6


async def server_line(server: ServerProcess) -> str:
    """The next line the server prints (its acknowledgements)."""
    assert server.process.stdout is not None
    line = await asyncio.to_thread(server.process.stdout.readline)
    return line.strip()


@dataclass
class Syscalls:
    name: str
    calls: int
    errors: int


def parse_strace_summary(text: str) -> list[Syscalls]:
    """The rows of ``strace -c``'s table (without its total)."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0][0].isdigit():
            continue
        name = fields[-1]
        if name == "total":
            continue
        # % time, seconds, usecs/call, calls, [errors,] syscall
        errors = int(fields[4]) if len(fields) == 6 else 0
        rows.append(Syscalls(name, int(fields[3]), errors))
    return rows


async def traced(
    strace: str,
    server: ServerProcess,
    clients: list[CountedClient],
    messages: int,
    out_path: str,
) -> tuple[int, list[Syscalls]]:
    """Run ``messages`` round trips with ``strace -c -f`` attached to the server."""
    tracer = await asyncio.create_subprocess_exec(
        strace,
        "-c",
        "-f",
        "-p",
        str(server.pid),
        "-o",
        out_path,
        stderr=asyncio.subprocess.PIPE,
    )
    assert tracer.stderr is not None
    attached = (await tracer.stderr.readline()).decode()
    if "attached" not in attached:
        tracer.kill()
        await tracer.wait()
        raise RuntimeError(f"strace did not attach: {attached.strip()}")
    done = await round_trips(clients, messages)
    tracer.send_signal(signal.SIGINT)
    await tracer.communicate()
    summary = await asyncio.to_thread(Path(out_path).read_text, "utf-8")
    return done, parse_strace_summary(summary)


def short_name(func: tuple[str, int, str]) -> str:
    """``package/module.py:line(name)`` for a pstats key, builtins as they are."""
    filename, line, name = func
    if filename == "~":
        return name
    cwd = os.getcwd() + os.sep
    if filename.startswith(cwd):
        filename = filename[len(cwd) :]
    elif "site-packages" in filename:
        filename = filename.rsplit("site-packages" + os.sep, 1)[1]
    else:
        filename = os.sep.join(filename.split(os.sep)[-2:])
    return f"{filename}:{line}({name})"


def profile_rows(dump_path: str, messages: int, top: int) -> list[list[str]]:
    """The top ``top`` functions by tottime, per message, with each one's share
    of the profiled total (the poll left out)."""
    stats = pstats.Stats(dump_path)
    entries = []
    for func, (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append((tottime, cumtime, calls, func))
    entries.sort(reverse=True)
    total = sum(e[0] for e in entries if not is_poll(e[3]))
    rows = [
        [
            "calls/msg",
            "tottime µs/msg",
            "share",
            "cumtime µs/msg",
            "function",
        ]
    ]
    for tottime, cumtime, calls, func in entries[:top]:
        poll = is_poll(func)
        share = tottime / total
        rows.append(
            [
                f"{calls / messages:.2f}",
                f"{tottime / messages * 1e6:.2f}",
                "" if poll else f"{share:.1%}",
                f"{cumtime / messages * 1e6:.2f}",
                short_name(func) + (" (mostly the idle wait)" if poll else ""),
            ]
        )
    rows.append(
        [
            "",
            f"{total / messages * 1e6:.2f}",
            "100%",
            "",
            "(every function but the poll)",
        ]
    )
    return rows


def is_poll(func: tuple[str, int, str]) -> bool:
    """Whether ``func`` is the event loop's wait for events (wall time, mostly idle)."""
    return func[0] == "~" and "poll" in func[2]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await measure(args, os.path.join(tmp, "echo.prof"), os.path.join(tmp, "strace"))


async def measure(args: argparse.Namespace, dump_path: str, strace_path: str) -> None:
    server = ServerProcess.start(
        SCRIPT,
        ["--serve", args.server, "--dump", dump_path]
        + (["--uvloop"] if args.uvloop else []),
    )
    try:
        clients = [
            c
            for c in await connect_clients(
                lambda: CountedClient(server.port, args.size), args.clients, server.port
            )
            if isinstance(c, CountedClient)
        ]
        print(f"server pid {server.pid} on CPUs {sorted(server.cpus())}")
        await round_trips(clients, WARM_UP_MESSAGES)

        plain: list[tuple[float, float]] = []
        profiled: list[tuple[float, float]] = []
        profiled_messages = 0
        for _ in range(args.rounds):
            plain.append(await cpu_per_message(server, clients, args.messages))
            server.process.send_signal(signal.SIGUSR1)
            assert await server_line(server) == PROFILING
            profiled.append(await cpu_per_message(server, clients, args.messages))
            profiled_messages += args.messages
            server.process.send_signal(signal.SIGUSR2)
            assert await server_line(server) == DUMPED
        print(
            f"server CPU µs per message (/proc; median [min-max] of {args.rounds}"
            f" rounds of {args.messages} messages):"
        )
        for label, phase in (("plain", plain), ("under cProfile", profiled)):
            print(
                f"  {label}: {spread([u + s for u, s in phase])}"
                f" (user {spread([u for u, _ in phase])},"
                f" system {spread([s for _, s in phase])})"
            )
        print()
        print(
            f"cProfile, top {args.top} by tottime, per message (wall time; share"
            " = of all functions but the poll):"
        )
        print_table(profile_rows(dump_path, profiled_messages, args.top))

        strace = shutil.which("strace")
        print()
        if strace is None:
            print("system calls: strace is not installed")
        else:
            traced_messages, syscalls = await traced(
                strace, server, clients, args.strace_messages, strace_path
            )
            print(f"system calls per message (strace -c -f, {traced_messages}):")
            print_table(syscall_rows(syscalls, traced_messages))
        await close_clients(clients)
    finally:
        server.stop()


def syscall_rows(syscalls: list[Syscalls], messages: int) -> list[list[str]]:
    """System calls per message, most frequent first, and their total."""
    rows = [["calls/msg", "errors/msg", "system call"]]
    for row in sorted(syscalls, key=lambda s: -s.calls):
        errors = f"{row.errors / messages:.3f}" if row.errors else ""
        rows.append([f"{row.calls / messages:.3f}", errors, row.name])
    total = sum(row.calls for row in syscalls) / messages
    rows.append([f"{total:.3f}", "", "(all)"])
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=list(APPS), default="upgrade")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--messages", type=int, default=100_000, help="round trips per phase"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="plain and profiled phases, alternating; the profile adds them up",
    )
    parser.add_argument(
        "--strace-messages",
        type=int,
        default=20_000,
        help="round trips under strace (which slows the server down a lot)",
    )
    parser.add_argument("--size", type=int, default=32, help="payload bytes")
    parser.add_argument("--top", type=int, default=25, help="functions shown")
    parser.add_argument(
        "--uvloop", action="store_true", help="run the server on uvloop"
    )
    parser.add_argument("--serve", choices=list(APPS), help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    return parser.parse_args()


def run() -> None:
    args = parse_args()
    if args.serve:
        if args.uvloop and not install_uvloop():
            raise SystemExit("uvloop is not installed")
        asyncio.run(serve(args.serve, args.dump))
        return
    cpus = pin(CLIENT_CPU)
    generator_loop = "uvloop" if install_uvloop() else "asyncio"
    print(
        f"profile_echo: {LABELS[args.server]}, {args.clients} clients,"
        f" {args.size}-byte text messages, {args.messages} round trips per phase;"
        f" server on CPU 0 ({'uvloop' if args.uvloop else 'asyncio'}), clients"
        f" pid {os.getpid()} on CPUs {sorted(cpus)} ({generator_loop});"
        f" CPU accounting resolution {1000 / CLK_TCK:.0f} ms"
    )
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
