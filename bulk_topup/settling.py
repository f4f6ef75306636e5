"""Settling: turning open rows final through ``/api/status``.

A row in ``sending`` or ``unknown`` is never sent again before status has
answered for it. When status has never seen the trxid, the row is sent again
with the same trxid only if every earlier attempt provably never reached the
API, or if the provider is configured as de-duplicating trxids and the grace
period since the start of the last attempt has passed. Otherwise it goes to
``review`` for a person. Rows are polled with growing intervals until they are
final or the deadline passes; a deadline never moves a row to ``review``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from . import crashpoints
from .client import StatusAnswer, TopupClient
from .errors import ApiError, CredentialsRefused
from .journal import Journal, Transaction
from .limiter import RateLimiter, Sleep
from .models import FINAL_STATES, State
from .sender import UNSENT_OUTCOMES

logger = logging.getLogger(__name__)

_FROM_PROVIDER = {"Success": State.SUCCESS, "Processing": State.PROCESSING}
SETTLE_STATES = (State.SENDING, State.UNKNOWN, State.PROCESSING)


@dataclass(frozen=True)
class SettleSettings:
    """Polling intervals, and the rules for sending an unseen trxid again."""

    timeout: float = 600.0
    first_interval: float = 1.0
    max_interval: float = 30.0
    grace_seconds: float = 120.0
    provider_dedupes: bool = False
    concurrency: int = 1


@dataclass(frozen=True)
class Verdict:
    """The verdict on a row after one status response: settled, resend, wait."""

    resend: bool = False
    done: bool = False


class Settler:
    """Polls status for open rows and applies each answer to the journal."""

    def __init__(
        self,
        journal: Journal,
        client: TopupClient,
        limiter: RateLimiter,
        settings: SettleSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.journal = journal
        self.client = client
        self.limiter = limiter
        self.settings = settings
        self.halted: str | None = None
        self._clock = clock
        self._sleep = sleep

    async def settle(self, trxids: list[str], *, immediately: bool = True) -> list[str]:
        """Poll rows until final, due for a resend, or out of time.

        Returns the trxids that must be sent again with the same trxid.
        """
        deadline = self._clock() + self.settings.timeout
        first = 0.0 if immediately else self.settings.first_interval
        due = [
            (self._clock() + first, index, trxid) for index, trxid in enumerate(trxids)
        ]
        heapq.heapify(due)
        intervals = dict.fromkeys(trxids, self.settings.first_interval)
        resend: list[str] = []

        async def poll() -> None:
            # Several pollers share one heap, so that a slow status answer
            # delays one row, not every row behind it.
            while due and self.halted is None:
                when, index, trxid = heapq.heappop(due)
                if when > deadline:
                    return
                await self._sleep(max(0.0, when - self._clock()))
                verdict = await self.check(trxid)
                if verdict.resend:
                    resend.append(trxid)
                if verdict.done or verdict.resend:
                    continue
                heapq.heappush(due, (self._clock() + intervals[trxid], index, trxid))
                intervals[trxid] = min(intervals[trxid] * 2, self.settings.max_interval)

        pollers = max(1, min(self.settings.concurrency, len(trxids)))
        await asyncio.gather(*(poll() for _ in range(pollers)))
        return resend

    async def check(self, trxid: str) -> Verdict:
        """Ask status about one row and apply the answer."""
        tx = self.journal.get(trxid)
        if tx is None or tx.state not in SETTLE_STATES:
            return Verdict(done=True)
        await self.limiter.acquire()
        try:
            answer = await self.client.status(trxid)
        except CredentialsRefused as error:
            self.halted = "invalid_credentials"
            logger.error("status call failed: invalid credentials: %s", error.message)
            return Verdict()
        except ApiError as error:
            logger.warning("status of %s failed: %s", trxid, error.message)
            return Verdict()
        crashpoints.crash_point("while_settling")
        return self.apply(tx, answer)

    async def recheck_review(self, trxid: str) -> str | None:
        """Ask status about a row in review and record the answer, if any.

        Status never moves a row out of review, because only a person may;
        the answer is kept so that ``resolve`` can refuse a contradiction.
        """
        await self.limiter.acquire()
        try:
            answer = await self.client.status(trxid)
        except ApiError as error:
            logger.warning("status of %s failed: %s", trxid, error.message)
            return None
        if answer.status is None:
            return None
        self.journal.update_fields(
            trxid,
            provider_status=answer.status,
            message=f"status now returns {answer.status}; settle it with resolve",
        )
        return answer.status

    def apply(self, tx: Transaction, answer: StatusAnswer) -> Verdict:
        """Apply a status answer to a row and say what happens next."""
        fields = {"provider_status": answer.status or "not found"}
        if answer.status is None:
            return self._apply_unseen(tx)
        if answer.status == "Cancel":
            if tx.state is State.SENDING:
                self.journal.transition(
                    tx.trxid, State.PROCESSING, cause="status", fields=fields
                )
            self.journal.transition(
                tx.trxid, State.CANCELLED, cause="status: Cancel", fields=fields
            )
            return Verdict(done=True)
        new_state = _FROM_PROVIDER[answer.status]
        if new_state is State.PROCESSING and tx.state is State.PROCESSING:
            self.journal.update_fields(tx.trxid, **fields)
            return Verdict()
        self.journal.transition(
            tx.trxid, new_state, cause=f"status: {answer.status}", fields=fields
        )
        return Verdict(done=new_state in FINAL_STATES)

    def _apply_unseen(self, tx: Transaction) -> Verdict:
        if tx.state is State.PROCESSING:
            # The API accepted it, so its status may lag: keep polling.
            return Verdict()
        if tx.state is State.SENDING:
            tx = self.journal.transition(
                tx.trxid,
                State.UNKNOWN,
                cause="status has not seen the trxid",
                fields={"provider_status": "not found"},
            )
        if self._never_reached_api(tx):
            return Verdict(resend=True)
        if self._seconds_since_last_attempt(tx) < self.settings.grace_seconds:
            return Verdict()
        if self.settings.provider_dedupes:
            return Verdict(resend=True)
        self.journal.transition(
            tx.trxid,
            State.REVIEW,
            cause="status never saw the trxid after the grace period",
            fields={
                "provider_status": "not found",
                "reason": "status_never_saw_trxid",
            },
        )
        return Verdict(done=True)

    def _never_reached_api(self, tx: Transaction) -> bool:
        attempts = [row for row in self.journal.attempts(tx.trxid)]
        recharges = [row for row in attempts if row["call"] == "recharge"]
        return bool(recharges) and all(
            row["outcome"] in UNSENT_OUTCOMES for row in recharges
        )

    def _seconds_since_last_attempt(self, tx: Transaction) -> float:
        if tx.last_attempt_at is None:
            return float("inf")
        started = datetime.fromisoformat(tx.last_attempt_at)
        return (datetime.now(UTC) - started).total_seconds()
