"""Rate limit: what ``rate_limit`` costs per read and per message, on and off.

A micro-benchmark of the read path the option changes: a socket's reads go to
its :class:`~aiohttp_upgrade._parser.FrameParser` directly when no limit is set,
and through a :class:`~aiohttp_upgrade._ratelimit.ReadLimiter` when one is. Each
read holds ``--per-read`` masked text messages of ``--size`` bytes, parsed for
real (aiohttp's compiled unmasking) into a sink that drops them; the limit is
set so high that it never acts, so the figure is the check itself. Printed: ns
per read off and on, and the difference per read and per message, each the best
of ``--repeat`` runs, off and on alternating.

With ``--check-only`` the parser is a stub that parses nothing (it only counts
frames), so that the figure is the check alone, free of the parser's noise.

Usage: python benchmarks/ratelimit.py [--per-read 1 10 100] [--size 32]
       [--reads 200000] [--repeat 7] [--check-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import client_frame

from aiohttp_upgrade import RateLimit
from aiohttp_upgrade._compat import compiled_mask
from aiohttp_upgrade._frames import OP_TEXT, xor_mask
from aiohttp_upgrade._metrics import Counters
from aiohttp_upgrade._parser import FrameParser
from aiohttp_upgrade._ratelimit import ReadLimiter
from aiohttp_upgrade._reads import new_read_buffer

NEVER = RateLimit(frames_per_second=1e12, bytes_per_second=1e15)


class Sink:
    """Drops what the parser reports."""

    def on_message(self, message: str | bytes) -> None: ...
    def on_ping(self, data: bytes) -> None: ...
    def on_pong(self, data: bytes) -> None: ...
    def on_close(self, code: int, reason: str) -> None: ...
    def on_protocol_error(self, error: Exception) -> None: ...


class Owner:
    """What a ReadLimiter asks of its connection (never reached here)."""

    id = 0
    ws: Any = SimpleNamespace(ready_state=1)  # OPEN
    dispatcher: Any = None
    transport: Any = None

    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...
    def read_into(self, buffer: memoryview) -> None: ...


class NullParser:
    """A parser that parses nothing: counts ``per_read`` frames per read, so that
    the check alone is measured."""

    __slots__ = ("frames", "needed", "per_read")

    def __init__(self, per_read: int) -> None:
        self.frames = self.needed = 0
        self.per_read = per_read

    def feed(self, data: bytes) -> None:
        self.frames += self.per_read


class Holder:
    """Stands for the connection: ``self.parser.feed(data)`` as data_received does."""

    __slots__ = ("parser",)

    def __init__(self, parser: Any) -> None:
        self.parser = parser


def run(limited: bool, data: bytes, reads: int, null: int = 0) -> float:
    """Seconds per read (``null``: through a NullParser of that many frames)."""
    parser: Any = (
        NullParser(null)
        if null
        else FrameParser(Sink(), 1 << 24, mask=compiled_mask or xor_mask)
    )
    holder = Holder(
        ReadLimiter(Owner(), parser, NEVER, True, Counters(), new_read_buffer())
        if limited
        else parser
    )
    start = time.perf_counter()
    for _ in range(reads):
        holder.parser.feed(data)
    return (time.perf_counter() - start) / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-read", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--size", type=int, default=32, help="payload bytes")
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="feed a parser that does nothing: the check's own cost",
    )
    args = parser.parse_args()
    print(
        f"{'messages/read':>13} {'off ns/read':>12} {'on ns/read':>11} "
        f"{'+ns/read':>9} {'+ns/message':>12}"
    )
    for per_read in args.per_read:
        data = client_frame(b"x" * args.size, OP_TEXT, b"abcd") * per_read
        reads = max(1000, args.reads // per_read)
        off: list[float] = []
        on: list[float] = []
        for _ in range(args.repeat):
            null = per_read if args.check_only else 0
            off.append(run(False, data, reads, null))
            on.append(run(True, data, reads, null))
        best_off, best_on = min(off) * 1e9, min(on) * 1e9
        extra = best_on - best_off
        print(
            f"{per_read:>13} {best_off:>12.0f} {best_on:>11.0f} "
            f"{extra:>9.0f} {extra / per_read:>12.1f}"
        )


if __name__ == "__main__":
    main()
