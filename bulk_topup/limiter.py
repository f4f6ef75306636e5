"""Rate limiting of request starts, with an injectable clock.

``RateLimiter`` spaces starts evenly, one every ``1 / rate`` seconds, with a
burst of one (GCRA). Even spacing is what keeps every sliding one-second
window at or under the rate, the first second after start-up included, where
a token bucket would allow a burst. ``pause_until`` holds every start back
after an HTTP 429 until its ``Retry-After`` has passed.

Starts are reserved ahead of time, but a busy event loop can make a reserved
start run late and bunch up with the ones after it. ``wait_spacing`` checks
each start as it happens against the previous one, so that the starts that
actually happen stay an interval apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Seconds of every one-second window that a run leaves unused. The server
# counts arrivals, and an arrival can lag its start by more than the others
# do: the first request of a run, which opens a connection, arrived about
# 15 ms late against a loopback sandbox on a 2-core machine.
# NOTE: an estimate from that measurement; a slower link may need more.
ARRIVAL_SLACK = 0.025


class RateLimiter:
    """Spaces request starts so that no one-second window holds more than rate."""

    def __init__(
        self,
        rate: float,
        *,
        slack: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be above 0, not {rate}")
        self.rate = rate
        # A nanosecond over the exact spacing absorbs the rounding of float
        # sums, which would otherwise fit rate + 1 starts in one second.
        # Slack widens the spacing so that rate + 1 starts span 1 + slack.
        self.interval = (1.0 + slack) / rate + 1e-9
        self._clock = clock
        self._sleep = sleep
        self._next_start: float | None = None
        self._paused_until = 0.0
        self._last_start = float("-inf")

    def reserve(self, not_before: float = 0.0) -> float:
        """Claim and return the next start at or after not_before, without waiting."""
        now = self._clock()
        start = max(now, self._paused_until, not_before)
        if self._next_start is not None:
            start = max(start, self._next_start)
        self._next_start = start + self.interval
        return start

    def next_start(self) -> float:
        """Return the earliest start the next reservation would get."""
        start = max(self._clock(), self._paused_until)
        if self._next_start is not None:
            start = max(start, self._next_start)
        return start

    def pause_until(self, moment: float) -> None:
        """Allow no start before moment (a clock value)."""
        self._paused_until = max(self._paused_until, moment)
        if self._next_start is not None:
            self._next_start = max(self._next_start, moment)

    @property
    def paused_until(self) -> float:
        """Return the clock value before which no start is allowed."""
        return self._paused_until

    async def acquire(self, not_before: float = 0.0) -> None:
        """Wait for the next start that keeps the rate, at or after not_before."""
        while True:
            start = self.reserve(not_before)
            delay = start - self._clock()
            if delay > 0:
                await self._sleep(delay)
            # A 429 may have paused the limiter while this start waited.
            if self._clock() >= self._paused_until:
                break
        await self.wait_spacing(not_before)

    async def wait_spacing(self, not_before: float = 0.0) -> None:
        """Wait an interval after the last start, and until not_before; then start."""
        while True:
            now = self._clock()
            earliest = max(
                self._last_start + self.interval, self._paused_until, not_before
            )
            if now >= earliest:
                self._last_start = now
                return
            await self._sleep(earliest - now)
