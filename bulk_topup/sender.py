"""Sending: the rate limiter, the retry policy, the client and the journal.

The order of steps for each row is what keeps a recharge charged at most
once: the repeat guard runs, the row is committed as ``sending`` (with its
attempt and the hash of its body), and only then does the request leave. A
crash after the commit leaves the row ``sending``, which is settled through
``/api/status`` and never sent blindly again.

Rows are committed as ``sending`` in small groups: those whose rate-limited
start falls within the next ``group_window`` seconds. That keeps the journal's
fsyncs off the critical path at high rates, and keeps a row ``sending`` for
about that long before its request goes out. When the event loop falls
behind the rate, a row can wait up to about ``concurrency / rate`` longer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_any,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_exponential_jitter

from . import crashpoints
from .client import TopupClient, hash_body
from .errors import (
    AmbiguousOutcome,
    ApiError,
    BalanceRefused,
    CredentialsRefused,
    NotSent,
    RateLimited,
    Refused,
)
from .journal import Journal, Transaction
from .limiter import RateLimiter, Sleep
from .models import State
from .planning import find_repeat

logger = logging.getLogger(__name__)

# Attempt outcomes that prove a request never reached the API.
UNSENT_OUTCOMES = frozenset({"not_sent", "rate_limited"})


@dataclass(frozen=True)
class SendSettings:
    """Rate, concurrency and retry settings for sending rows."""

    rate: float = 10.0
    concurrency: int = 8
    same_number_gap: float = 0.0
    row_retries: int = 4
    batch_retries: int = 200
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    breaker_threshold: int = 5
    drain_seconds: float = 30.0
    group_window: float = 0.05
    allow_repeat: bool = False
    repeat_window_hours: float = 12.0


@dataclass
class SendState:
    """The state of one sending pass: a halt, paused operators, counters."""

    halted: str | None = None
    paused_operators: dict[str, str] = field(default_factory=dict)
    retries_left: int = 0
    sent: int = 0
    stopping: bool = False
    consecutive_failures: dict[str, int] = field(default_factory=dict)
    over_budget: set[str] = field(default_factory=set)


class _RowBudgetSpent(stop_base):
    """Stops retrying a row after its retries; HTTP 429 gets three times more.

    A 429 is the API asking for patience, not failing, so a row spends its
    budget more slowly on them than on connections that fail.
    """

    def __init__(self, retries: int) -> None:
        self.retries = retries

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        allowed = self.retries + 1
        if isinstance(error, RateLimited):
            allowed *= 3
        return retry_state.attempt_number >= allowed


class _BudgetSpent(stop_base):
    """Stops retrying once the batch's retry budget is spent."""

    def __init__(self, state: SendState) -> None:
        self.state = state

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.state.retries_left <= 0


def recharge_fields(tx: Transaction) -> dict[str, Any]:
    """Return the body of a row's recharge request, credentials left out."""
    fields: dict[str, Any] = {
        "number": tx.number,
        "type": tx.type,
        "operator": tx.operator,
        "amount": tx.amount,
        "trxid": tx.trxid,
    }
    if tx.package_id:
        fields["package_id"] = tx.package_id
    return fields


class Sender:
    """Sends a batch's rows under a rate and concurrency limit."""

    def __init__(
        self,
        journal: Journal,
        client: TopupClient,
        limiter: RateLimiter,
        settings: SendSettings,
        *,
        target: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_progress: Callable[[Transaction], None] | None = None,
    ) -> None:
        self.journal = journal
        self.client = client
        self.limiter = limiter
        self.settings = settings
        self.target = target
        self.state = SendState(retries_left=settings.batch_retries)
        self._clock = clock
        self._sleep = sleep
        self._on_progress = on_progress
        # Each number's latest reserved start, and its latest real one.
        self._last_start: dict[str, float] = {}
        self._last_sent: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The first error a row's task raised, kept until send() raises it.
        self._failure: BaseException | None = None
        # With --allow-partial, the balance left for rows not yet sent; rows
        # above it are left unsent instead of being refused by the API.
        self.budget: Decimal | None = None

    def stop(self) -> None:
        """Start no new request; those in flight finish."""
        self.state.stopping = True

    async def send(self, rows: list[Transaction]) -> None:
        """Send rows in order until done, halted or stopped."""
        queue: deque[Transaction] = deque(rows)
        while queue and not self._should_stop():
            await self._wait_for_slot()
            if self._should_stop():
                break
            await self._take_group(queue)
        await self._drain()

    def _should_stop(self) -> bool:
        return (
            self.state.stopping
            or self.state.halted is not None
            or self._failure is not None
        )

    async def _wait_for_slot(self) -> None:
        while len(self._tasks) >= self.settings.concurrency:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def _take_group(self, queue: deque[Transaction]) -> list[Transaction]:
        """Take the rows to commit together, after the repeat guard."""
        group: list[tuple[Transaction, float]] = []
        # Commit a row as `sending` only shortly before its start: a row
        # committed long before would be left `sending`, unsent, by a crash.
        wait = self.limiter.next_start() - self._clock() - self.settings.group_window
        if wait > 0:
            await self._sleep(wait)
        horizon = self._clock() + self.settings.group_window
        free = self.settings.concurrency - len(self._tasks)
        while queue and len(group) < free:
            if group and self.limiter.next_start() > horizon:
                break
            tx = await self._next_ready(queue, wait=not group)
            if tx is None:
                break
            if tx.operator in self.state.paused_operators:
                continue
            if self._is_repeat(tx) or not self._fits_budget(tx):
                continue
            # A row taken within the group window of its gap must still wait
            # for the gap itself.
            start = self.limiter.reserve(not_before=self._ready_at(tx))
            self._last_start[tx.number or ""] = start
            group.append((tx, start))
        return self._commit_sending(group)

    async def _next_ready(
        self, queue: deque[Transaction], *, wait: bool
    ) -> Transaction | None:
        """Pop the first row whose number is past its same-number gap."""
        while queue:
            earliest = None
            for index, tx in enumerate(queue):
                ready_at = self._ready_at(tx)
                if ready_at <= self._clock() + self.settings.group_window:
                    del queue[index]
                    return tx
                earliest = ready_at if earliest is None else min(earliest, ready_at)
                if index >= 1000:
                    break
            if not wait or earliest is None:
                return None
            await self._sleep(max(0.0, earliest - self._clock()))
        return None

    def _ready_at(self, tx: Transaction) -> float:
        """Return the earliest start that keeps the same-number gap."""
        number = tx.number or ""
        last = max(
            self._last_start.get(number, float("-inf")),
            self._last_sent.get(number, float("-inf")),
        )
        return last + self.settings.same_number_gap

    def _fits_budget(self, tx: Transaction) -> bool:
        if self.budget is None or tx.state is State.UNKNOWN:
            return True
        amount = Decimal(tx.amount or 0)
        if amount > self.budget:
            self.state.over_budget.add(tx.trxid)
            return False
        self.budget -= amount
        return True

    def _is_repeat(self, tx: Transaction) -> bool:
        if self.settings.allow_repeat or tx.state is State.UNKNOWN:
            return False
        repeat_of = find_repeat(
            self.journal, tx, self.target, self.settings.repeat_window_hours
        )
        if repeat_of is None:
            return False
        self.journal.transition(
            tx.trxid,
            State.REPEAT,
            cause="repeat of another batch",
            fields={"repeat_of": repeat_of, "reason": "repeat"},
        )
        return True

    def _commit_sending(
        self, group: list[tuple[Transaction, float]]
    ) -> list[Transaction]:
        if not group:
            return []
        starts = [(tx.trxid, hash_body(recharge_fields(tx))) for tx, _ in group]
        # Committing `sending` before the request leaves is what makes a crash
        # leave the row to be settled by status instead of sent again.
        attempts = self.journal.start_attempts(starts)
        crashpoints.crash_point("after_sending_committed")
        for tx, start in group:
            task = asyncio.ensure_future(self._send_row(tx, attempts[tx.trxid], start))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        self.state.sent += len(group)
        return [tx for tx, _ in group]

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # A task that finished while send() waited for a free slot is no
        # longer in _tasks when _drain looks, so its error is kept here.
        if not task.cancelled() and self._failure is None:
            self._failure = task.exception()

    async def _drain(self) -> None:
        if not self._tasks:
            self._raise_failure()
            return
        timeout = self.settings.drain_seconds if self.state.stopping else None
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        # Every finished task has passed through _task_done by now.
        self._raise_failure()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def _send_row(self, tx: Transaction, attempt: int, start: float) -> None:
        delay = start - self._clock()
        if delay > 0:
            await self._sleep(delay)
        await self._start_request(tx)
        fields = recharge_fields(tx)
        retrying = self.retry_policy()
        numbers = {"attempt": attempt}
        try:
            async for attempt_state in retrying:
                with attempt_state:
                    if attempt_state.retry_state.attempt_number > 1:
                        numbers["attempt"] = await self._start_retry(tx, fields)
                    await self._attempt(tx, fields, numbers["attempt"])
        except NotSent as error:
            self._record_gave_up(tx, numbers["attempt"], error)
        if self._on_progress is not None:
            current = self.journal.get(tx.trxid)
            if current is not None:
                self._on_progress(current)

    async def _start_request(self, tx: Transaction) -> None:
        """Wait for the rate limit and the same-number gap, then mark the start."""
        number = tx.number or ""
        gap = self.settings.same_number_gap
        while True:
            # Rows are scheduled from reserved starts, but a stalled event
            # loop can wake a row together with its number's previous row, so
            # the gap is also kept from the previous real start.
            due = self._last_sent.get(number, float("-inf")) + gap
            if self._clock() < self.limiter.paused_until:
                await self.limiter.acquire(not_before=due)
            else:
                await self.limiter.wait_spacing(not_before=due)
            # Another row of the number may have started during the wait.
            if self._last_sent.get(number, float("-inf")) + gap <= self._clock():
                break
        self._last_sent[number] = self._clock()

    def retry_policy(self, call: str | None = None) -> AsyncRetrying:
        """Return the policy that repeats a call which surely never reached the API.

        It repeats only ``NotSent`` errors, at most ``row_retries`` times and
        while the batch's retry budget lasts, and honours ``Retry-After``.
        With ``call``, each retry is logged under that name; recharges log
        their own retries with the trxid.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(NotSent),
            stop=stop_any(
                _RowBudgetSpent(self.settings.row_retries),
                _BudgetSpent(self.state),
            ),
            wait=self._wait_before_retry,
            sleep=self._sleep,
            reraise=True,
        )
        if call is None:
            return retrying

        def log_retry(retry_state: RetryCallState) -> None:
            outcome = retry_state.outcome
            logger.warning(
                "retrying %s (attempt %d): %s",
                call,
                retry_state.attempt_number + 1,
                outcome.exception() if outcome else "no outcome",
            )

        return retrying.copy(before_sleep=log_retry)

    def _wait_before_retry(self, retry_state: RetryCallState) -> float:
        self.state.retries_left -= 1
        backoff = wait_exponential_jitter(
            multiplier=self.settings.backoff_initial,
            max=self.settings.backoff_max,
            jitter=self.settings.backoff_initial,
        )(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, RateLimited) and error.retry_after is not None:
            # Retry-After pauses every start, not only this row's retry.
            self.limiter.pause_until(self._clock() + error.retry_after)
            return max(error.retry_after, 0.0)
        return float(backoff)

    async def _start_retry(self, tx: Transaction, fields: dict[str, Any]) -> int:
        previous = self.journal.attempts(tx.trxid)[-1]
        logger.warning(
            "retrying %s (attempt %d): %s",
            tx.trxid,
            previous["attempt"] + 1,
            previous["message"],
        )
        await self._start_request(tx)
        numbers = self.journal.start_attempts([(tx.trxid, hash_body(fields))])
        return numbers[tx.trxid]

    async def _attempt(
        self, tx: Transaction, fields: dict[str, Any], attempt: int
    ) -> None:
        try:
            answer = await self.client.recharge(fields)
        except NotSent as error:
            crashpoints.crash_point("after_answer_before_journal")
            outcome = "rate_limited" if isinstance(error, RateLimited) else "not_sent"
            self.journal.finish_attempt(
                tx.trxid,
                attempt,
                outcome=outcome,
                http_status=error.http_status,
                message=error.message,
            )
            raise
        except Refused as error:
            crashpoints.crash_point("after_answer_before_journal")
            self._record_refusal(tx, attempt, error)
            return
        except AmbiguousOutcome as error:
            crashpoints.crash_point("after_answer_before_journal")
            self._record_unknown(tx, attempt, error)
            return
        crashpoints.crash_point("after_answer_before_journal")
        self.state.consecutive_failures[tx.operator or ""] = 0
        self.journal.finish_attempt(
            tx.trxid,
            attempt,
            outcome="accepted",
            http_status=answer.http_status,
            message=answer.message,
            new_state=State.PROCESSING,
        )

    def _reached_before(self, tx: Transaction, attempt: int) -> bool:
        """Return whether an earlier attempt may have reached the API."""
        earlier = [
            row
            for row in self.journal.attempts(tx.trxid)
            if row["call"] == "recharge" and row["attempt"] < attempt
        ]
        return any(row["outcome"] not in UNSENT_OUTCOMES for row in earlier)

    def _record_refusal(self, tx: Transaction, attempt: int, error: Refused) -> None:
        if self._reached_before(tx, attempt):
            # A refusal after an attempt that may have been charged says
            # nothing about that attempt: only status can settle it.
            self._record_unknown(tx, attempt, error)
            return
        if error.code == "duplicate_trxid":
            self._record_unknown(tx, attempt, error)
            return
        if isinstance(error, BalanceRefused | CredentialsRefused):
            self.halt(error.code, error.message)
        else:
            self._count_failure(tx)
        self.journal.finish_attempt(
            tx.trxid,
            attempt,
            outcome=error.code,
            http_status=error.http_status,
            message=error.message,
            new_state=State.FAILED,
            fields={"reason": error.code},
        )

    def _record_unknown(self, tx: Transaction, attempt: int, error: ApiError) -> None:
        logger.warning(
            "%s left unknown after attempt %d: %s", tx.trxid, attempt, error.message
        )
        self._count_failure(tx)
        self.journal.finish_attempt(
            tx.trxid,
            attempt,
            outcome=error.code,
            http_status=error.http_status,
            message=error.message,
            new_state=State.UNKNOWN,
        )

    def _record_gave_up(self, tx: Transaction, attempt: int, error: NotSent) -> None:
        logger.error("%s not sent after %d attempts: %s", tx.trxid, attempt, error)
        if isinstance(error, RateLimited):
            self.halt(
                "rate_limited", "the API kept answering HTTP 429 Too Many Requests"
            )
        else:
            self.halt("outage", f"the API could not be reached: {error.message}")
        self.journal.transition(
            tx.trxid,
            State.UNKNOWN,
            cause="retry budget spent",
            fields={"message": f"not sent: {error.message}"},
        )

    def _count_failure(self, tx: Transaction) -> None:
        operator = tx.operator or ""
        failures = self.state.consecutive_failures.get(operator, 0) + 1
        self.state.consecutive_failures[operator] = failures
        threshold = self.settings.breaker_threshold
        if threshold and failures >= threshold:
            if operator not in self.state.paused_operators:
                logger.warning(
                    "pausing operator %s after %d failures in a row",
                    operator,
                    failures,
                )
            self.state.paused_operators[operator] = (
                f"operator {operator} paused after {failures} failures in a row"
            )

    def halt(self, reason: str, message: str) -> None:
        """Stop starting requests for the rest of the batch."""
        if self.state.halted is None:
            logger.error("halting the batch: %s", message)
            self.state.halted = reason
