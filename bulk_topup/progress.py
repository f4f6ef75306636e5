"""Progress of a sending run: a status line on a terminal, a log line otherwise.

Numbers never appear here: progress counts rows and Taka only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Counts finished rows and Taka and shows them every few seconds."""

    def __init__(
        self,
        total_rows: int,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        quiet: bool = False,
    ) -> None:
        self.total_rows = total_rows
        self.done = 0
        self.taka = 0
        self._counted: set[str] = set()
        self._stream = stream or sys.stderr
        self._clock = clock
        self._started = clock()
        self._quiet = quiet
        self._is_terminal = self._stream.isatty()

    def add(self, trxid: str, amount: int) -> None:
        """Count a row once, however many times it was sent."""
        if trxid in self._counted:
            return
        self._counted.add(trxid)
        self.done += 1
        self.taka += amount

    def line(self) -> str:
        """Return the progress as one line: rows, rate, ETA, Taka."""
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        left = self.total_rows - self.done
        eta = f"{left / rate:.0f} s" if rate > 0 and left > 0 else "-"
        return (
            f"{self.done}/{self.total_rows} rows, {rate:.1f} rows/s, "
            f"ETA {eta}, {self.taka} Taka sent"
        )

    def show(self) -> None:
        """Print the line: in place on a terminal, as a log line otherwise."""
        if self._quiet:
            return
        if self._is_terminal:
            self._stream.write("\r" + self.line().ljust(70))
            self._stream.flush()
        else:
            stamp = time.strftime("%H:%M:%S")
            self._stream.write(f"{stamp} progress: {self.line()}\n")
            self._stream.flush()

    def finish(self) -> None:
        """End the status line on a terminal."""
        if self._is_terminal and not self._quiet:
            self._stream.write("\r" + self.line().ljust(70) + "\n")
            self._stream.flush()

    async def run(self, *, interval: float | None = None) -> None:
        """Show progress every interval seconds until cancelled."""
        period = interval or (0.5 if self._is_terminal else 5.0)
        while True:
            await asyncio.sleep(period)
            self.show()
