"""History chaos: 3 worker processes on one Redis, 200 clients in a few rooms
dropping their connection at random (0.1 to 3 s offline) and resuming from their
last position on any worker, one worker killed with SIGKILL during the run,
100,000 messages. Prints the report: every client must end with every message of
its room after its first position, once and in order (gaps 0, duplicates 0).

The run itself is tests/chaos_support.py (tests/test_history_chaos.py runs it
scaled down as a test).

Usage: python benchmarks/chaos_history.py [--clients 200] [--rooms 8]
       [--messages 100000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.chaos_support import run_chaos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    report = asyncio.run(
        run_chaos(
            clients=args.clients,
            rooms=args.rooms,
            messages=args.messages,
            rate=args.rate,
            workers=args.workers,
            offline=(0.1, 3.0),
            settle=120.0,
        )
    )
    print("history chaos:", *report.lines(), sep="\n  ")
    ok = not (
        report.gaps or report.duplicates or report.other_epoch or report.unfinished
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
