"""The history chaos run, scaled down (tests/chaos_support.py): 3 worker processes
on one Redis, clients dropping at random and resuming on any worker, one worker
SIGKILLed; every client ends with every message of its room, once, in order."""

from __future__ import annotations

import pytest

from .chaos_support import run_chaos
from .redis_support import requires_redis

pytestmark = [pytest.mark.redis, requires_redis]


async def test_chaos_resumes_lose_and_repeat_nothing() -> None:
    """40 clients in 3 rooms, 6,000 messages, drops of 0.1-1 s, a worker
    killed at 40%: gaps 0 and duplicates 0, every resume recovered."""
    report = await run_chaos(
        clients=40, rooms=3, messages=6000, rate=600, offline=(0.1, 1.0), settle=20
    )
    print("\n".join(report.lines()))
    assert report.published >= 6000 * 0.9  # what the killed worker held is lost
    assert (report.gaps, report.duplicates, report.other_epoch) == (0, 0, 0)
    assert report.unfinished == 0
    assert report.not_recovered == 0, report.reasons
    assert report.resumes > 40
