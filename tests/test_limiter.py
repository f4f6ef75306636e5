"""The rate limiter, driven by a clock moved by hand."""

from __future__ import annotations

import asyncio

import pytest

from bulk_topup.limiter import RateLimiter


class FakeClock:
    """A clock that only moves when a sleep asks it to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def max_in_window(starts: list[float], window: float = 1.0) -> int:
    """Return the most starts in any half-open window [t, t + window)."""
    best = 0
    for index, start in enumerate(starts):
        count = sum(1 for other in starts[index:] if other < start + window)
        best = max(best, count)
    return best


def test_limiter_spaces_starts_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    starts = [limiter.reserve() for _ in range(5)]
    assert starts == pytest.approx([100.0, 100.25, 100.5, 100.75, 101.0])
    assert starts[4] > 101.0


@pytest.mark.parametrize("rate", [1, 3, 10, 50], ids=["1", "3", "10", "50"])
def test_limiter_window_never_exceeds_rate(rate: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)

    async def take(count: int) -> list[float]:
        starts = []
        for _ in range(count):
            await limiter.acquire()
            starts.append(clock.now)
        return starts

    starts = asyncio.run(take(rate * 5))
    assert max_in_window(starts) == rate


def test_limiter_burst_at_start_counts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    starts = [limiter.reserve() for _ in range(20)]
    assert max_in_window(starts) <= 5


def test_limiter_pause_holds_every_start() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.reserve()
    limiter.pause_until(102.5)
    assert limiter.reserve() >= 102.5


def test_limiter_acquire_waits_out_pause() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.pause_until(103.0)
    asyncio.run(limiter.acquire())
    assert clock.now >= 103.0


def test_limiter_rejects_zero_rate() -> None:
    with pytest.raises(ValueError, match="rate must be above 0"):
        RateLimiter(0)
