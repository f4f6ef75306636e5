"""The main job: plan, journal, send, settle, report, and pick the exit code.

``run_file`` validates and plans a file and then executes its batch;
``resume_batch`` and ``reconcile_batch`` execute a batch that is already in
the journal. Every one of them holds the journal's lock for its whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import crashpoints
from .client import Balance, TopupClient
from .config import Settings, require_credentials, warn_short_grace
from .errors import BulkTopupError, ConfigError, NotSent, PlanRefused
from .journal import Batch, Journal, Transaction
from .limiter import ARRIVAL_SLACK, RateLimiter
from .lock import hold_journal_lock
from .models import OPEN_STATES, State, Validation
from .planning import (
    PlanOptions,
    hold_repeats,
    options_from_batch,
    plan_batch,
    preview_plan,
    target_of,
)
from .progress import Progress
from .reading import read_batch
from .reports import default_report_path, summarize, write_report
from .sender import Sender, SendSettings
from .settling import SETTLE_STATES, Settler, SettleSettings
from .validation import format_problems, validate_table

logger = logging.getLogger(__name__)

# States that never go to the API: they do not decide the exit code.
_NOT_SENDABLE = frozenset(
    {State.INVALID, State.DUPLICATE, State.REPEAT, State.SUPERSEDED}
)


@dataclass(frozen=True)
class RunRequest:
    """The options of one ``run``, ``resume`` or ``reconcile`` request."""

    plan: PlanOptions = field(default_factory=PlanOptions)
    send: SendSettings = field(default_factory=SendSettings)
    settle_timeout: float = 600.0
    no_settle: bool = False
    allow_partial: bool = False
    yes: bool = False
    batch_id: str | None = None
    sheet: str | None = None
    max_total: int | None = None
    max_rows: int | None = None
    report_path: Path | None = None
    quiet: bool = False


@dataclass
class RunResult:
    """The outcome of a command: exit code, reason, summary, messages."""

    exit_code: int
    reason: str
    batch_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    messages: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the result as the ``--json`` document."""
        return {
            "exit_code": self.exit_code,
            "reason": self.reason,
            "batch_id": self.batch_id,
            "summary": self.summary,
            "report": str(self.report_path) if self.report_path else None,
            "messages": self.messages,
            "problems": self.problems,
        }


Confirm = Callable[[str], bool]


def load_validation(path: Path, request: RunRequest, settings: Settings) -> Validation:
    """Read and validate a batch file with the request's amount policy."""
    table = read_batch(path, sheet=request.sheet)
    return validate_table(table, request.plan.policy)


def run_file(
    settings: Settings, path: Path, request: RunRequest, confirm: Confirm
) -> RunResult:
    """Validate, plan and execute a batch file."""
    validation = load_validation(path, request, settings)
    rejected = validation.rejected_rows
    if rejected and not request.plan.skip_invalid:
        return RunResult(
            65,
            "invalid_rows",
            problems=format_problems(validation),
            messages=[
                f"{len(rejected)} invalid rows: nothing was sent. Fix them, "
                "or add --skip-invalid to send the valid rows only."
            ],
        )
    _check_guards(validation, request)
    target = target_of(settings.base_url, sandbox=settings.sandbox)
    with _locked_journal(settings) as journal:
        if not request.yes and not _confirm_new_plan(
            journal, validation, target, request, settings, confirm
        ):
            return RunResult(0, "declined", messages=["Nothing sent or planned."])
        request = dataclasses.replace(request, yes=True)
        planned = plan_batch(
            journal,
            validation,
            target=target,
            options=request.plan,
            batch_id=request.batch_id,
            prefix=settings.trxid_prefix,
            repeat_window_hours=settings.repeat_window_hours,
        )
        crashpoints.crash_point("after_planning")
        messages = []
        if planned.superseded:
            messages.append(
                f"{planned.superseded} unsent rows of an older version of "
                f"{Path(path).name} were superseded by this one."
            )
        if not planned.created:
            messages.append(f"Resuming batch {planned.batch.batch_id}.")
        result = _execute(settings, journal, planned.batch, request, confirm)
        result.messages[:0] = messages
        return result


def _confirm_new_plan(
    journal: Journal,
    validation: Validation,
    target: str,
    request: RunRequest,
    settings: Settings,
    confirm: Confirm,
) -> bool:
    """Ask before anything is journaled, so a declined plan leaves no batch."""
    preview = preview_plan(
        journal,
        validation,
        target=target,
        options=request.plan,
        batch_id=request.batch_id,
        prefix=settings.trxid_prefix,
        repeat_window_hours=settings.repeat_window_hours,
    )
    unsent = [
        row for row in preview.transactions if row["state"] in ("planned", "held")
    ]
    if not unsent:
        return True
    total = sum(row["amount"] or 0 for row in unsent)
    return confirm(
        f"Send {len(unsent)} recharges totalling {total} Taka "
        f"from batch {preview.batch_id}?"
    )


def resume_batch(
    settings: Settings, batch_id: str | None, request: RunRequest, confirm: Confirm
) -> RunResult:
    """Continue a journaled batch: settle what was in flight, send the rest."""
    with _locked_journal(settings) as journal:
        batch = _find_batch(journal, batch_id)
        request = _with_stored_options(request, batch)
        return _execute(settings, journal, batch, request, confirm)


def reconcile_batch(
    settings: Settings, batch_id: str | None, request: RunRequest
) -> RunResult:
    """Settle a batch's open rows through status; send nothing new."""
    with _locked_journal(settings) as journal:
        batch = _find_batch(journal, batch_id)
        return _execute(
            settings, journal, batch, request, lambda _: True, send_new=False
        )


@contextlib.contextmanager
def _locked_journal(settings: Settings) -> Iterator[Journal]:
    with hold_journal_lock(settings.journal_path):
        with Journal.open(settings.journal_path) as journal:
            yield journal


def _find_batch(journal: Journal, batch_id: str | None) -> Batch:
    batch = journal.get_batch(batch_id) if batch_id else journal.latest_batch()
    if batch is None:
        where = f"batch {batch_id}" if batch_id else "batch"
        raise ConfigError(
            f"The journal {journal.path} has no {where}. "
            "List batches with: bulk-topup batches"
        )
    return batch


def _with_stored_options(request: RunRequest, batch: Batch) -> RunRequest:
    stored = options_from_batch(batch)
    send = dataclasses.replace(request.send, allow_repeat=stored.allow_repeat)
    return dataclasses.replace(request, plan=stored, send=send)


def _check_guards(validation: Validation, request: RunRequest) -> None:
    rows = validation.valid_rows
    if request.max_rows is not None and len(rows) > request.max_rows:
        raise PlanRefused(
            f"The batch has {len(rows)} rows, above --max-rows {request.max_rows}. "
            "Check the file, or raise --max-rows.",
            code="max_rows",
        )
    total = sum(row.amount for row in rows if row.duplicate_of is None)
    if request.max_total is not None and total > request.max_total:
        raise PlanRefused(
            f"The batch totals {total} Taka, above --max-total "
            f"{request.max_total}. Check the amounts are in Taka, not poisha, "
            "or raise --max-total.",
            code="max_total",
        )


def _execute(
    settings: Settings,
    journal: Journal,
    batch: Batch,
    request: RunRequest,
    confirm: Confirm,
    *,
    send_new: bool = True,
) -> RunResult:
    pending = journal.transactions(
        batch.batch_id, (State.PLANNED, State.HELD, State.REVIEW, *SETTLE_STATES)
    )
    if not pending:
        result = _finish(journal, batch, request, interrupted=False)
        if State.REVIEW.value not in result.summary["counts"]:
            result.messages.append(
                f"Batch {batch.batch_id} is complete: every row is final, nothing sent."
            )
        return result
    unsent = [tx for tx in pending if tx.state in (State.PLANNED, State.HELD)]
    if send_new and unsent and not request.yes:
        total = sum(tx.amount or 0 for tx in unsent)
        question = (
            f"Send {len(unsent)} recharges totalling {total} Taka "
            f"from batch {batch.batch_id}?"
        )
        if not confirm(question):
            return RunResult(0, "declined", batch.batch_id, messages=["Nothing sent."])
    with _target(settings, batch) as base_url:
        execution = _Execution(settings, journal, batch, request, base_url)
        interrupted = asyncio.run(execution.run(send_new=send_new))
    batch = journal.get_batch(batch.batch_id) or batch
    return _finish(journal, batch, request, interrupted=interrupted)


@contextlib.contextmanager
def _target(settings: Settings, batch: Batch) -> Iterator[str]:
    """Yield the base URL of the batch's target, starting the sandbox if needed."""
    if batch.target == "sandbox":
        from .sandbox import SandboxConfig, start_sandbox

        if settings.sandbox_ledger is not None:
            settings.sandbox_ledger.parent.mkdir(parents=True, exist_ok=True)
        config = SandboxConfig(port=0, state_path=settings.sandbox_ledger)
        with start_sandbox(config) as sandbox:
            yield sandbox.url
        return
    if settings.sandbox:
        raise ConfigError(
            f"Batch {batch.batch_id} was sent to {batch.target}, not the sandbox; "
            "run the command without --sandbox."
        )
    if target_of(settings.base_url, sandbox=False) != batch.target:
        raise ConfigError(
            f"Batch {batch.batch_id} belongs to {batch.target}, not "
            f"{settings.base_url}. Use --base-url {batch.target}."
        )
    yield batch.target


class _Execution:
    """One asyncio run of a batch: balance check, send, settle."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        batch: Batch,
        request: RunRequest,
        base_url: str,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.batch = batch
        self.request = request
        self.base_url = base_url
        self.interrupts = 0

    async def run(self, *, send_new: bool) -> bool:
        """Execute the batch; return whether Ctrl-C stopped it."""
        send = self.request.send
        client = TopupClient(
            self.base_url,
            require_credentials(self.settings),
            concurrency=send.concurrency,
            endpoints=self.settings.endpoints,
            patterns=self.settings.patterns,
        )
        warn_short_grace(self.settings, client.timeouts.request)
        limiter = RateLimiter(send.rate, slack=ARRIVAL_SLACK)
        to_send = self.journal.transactions(
            self.batch.batch_id,
            (State.PLANNED, State.HELD, State.SENDING, State.UNKNOWN),
        )
        self.progress = Progress(len(to_send), quiet=self.request.quiet)
        self.sender = Sender(
            self.journal,
            client,
            limiter,
            send,
            target=self.batch.target,
            on_progress=self._count_progress,
        )
        self.settler = Settler(
            self.journal,
            client,
            limiter,
            SettleSettings(
                timeout=self.request.settle_timeout,
                first_interval=self.settings.settle_interval,
                grace_seconds=self.settings.grace_seconds,
                provider_dedupes=self.settings.provider_dedupes,
                concurrency=send.concurrency,
            ),
        )
        self._install_interrupt_handler()
        progress_task = asyncio.ensure_future(self.progress.run())
        try:
            await self._run_stages(client, send_new=send_new)
        finally:
            progress_task.cancel()
            await client.aclose()
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        if self.progress.done:
            self.progress.finish()
        return self.interrupts > 0

    def _count_progress(self, tx: Transaction) -> None:
        if tx.state in (State.PROCESSING, State.SUCCESS):
            self.progress.add(tx.trxid, tx.amount or 0)

    async def _run_stages(self, client: TopupClient, *, send_new: bool) -> None:
        batch_id = self.batch.batch_id
        if self.batch.halted_reason:
            self.journal.update_batch(batch_id, halted_reason=None)
        await self._recheck_review()
        await self._settle_in_flight()
        if send_new and not self._stopped():
            if await self._check_balance(client):
                await self._send_unsent()
        # After an outage, status calls would fail the same way until the
        # settle timeout, so `resume` settles the open rows once the API is back.
        outage = self.sender.state.halted == "outage"
        if not self.request.no_settle and not self.interrupts and not outage:
            await self._settle_open()
        self._hold_unsent()
        await self._record_balance_after(client)

    def _stopped(self) -> bool:
        return self.interrupts > 0 or self.sender.state.halted is not None

    def _install_interrupt_handler(self) -> None:
        def on_interrupt() -> None:
            self.interrupts += 1
            if self.interrupts > 1:
                # A second Ctrl-C exits at once; every commit so far is
                # durable and `resume` settles whatever was in flight.
                os._exit(130)
            logger.warning("interrupted: finishing requests in flight")
            self.sender.stop()
            self.settler.halted = "interrupted"

        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_interrupt)

    async def _recheck_review(self) -> None:
        """Record the status of rows waiting in review."""
        for tx in self.journal.transactions(self.batch.batch_id, (State.REVIEW,)):
            status = await self.settler.recheck_review(tx.trxid)
            if status is not None:
                logger.warning(
                    "%s is in review, but status returns %s", tx.trxid, status
                )

    async def _settle_in_flight(self) -> None:
        """Settle rows left in flight by an earlier run before sending more."""
        in_flight = self.journal.transactions(
            self.batch.batch_id, (State.SENDING, State.UNKNOWN)
        )
        if not in_flight:
            return
        logger.info("asking status about %d rows left in flight", len(in_flight))
        # One status query per row, not a wait for each to settle: rows that
        # status has not seen wait out their grace period in the final
        # settling, while the rows never sent go out now.
        gate = asyncio.Semaphore(self.request.send.concurrency)

        async def check(trxid: str) -> str | None:
            async with gate:
                verdict = await self.settler.check(trxid)
            return trxid if verdict.resend else None

        verdicts = await asyncio.gather(*(check(tx.trxid) for tx in in_flight))
        await self._resend([trxid for trxid in verdicts if trxid is not None])

    async def _resend(self, trxids: list[str]) -> None:
        rows = [tx for tx in map(self.journal.get, trxids) if tx is not None]
        if rows:
            logger.info("sending %d rows again with the same trxid", len(rows))
            await self.sender.send(rows)

    async def _check_balance(self, client: TopupClient) -> bool:
        """Compare the balance with the unsent total; halt on a shortfall."""
        unsent = self.journal.transactions(
            self.batch.batch_id, (State.PLANNED, State.HELD)
        )
        if not unsent:
            return True
        hold_repeats(
            self.journal,
            self.batch.batch_id,
            self.batch.target,
            self.request.plan,
            self.settings.repeat_window_hours,
        )
        try:
            balance = await self._fetch_balance(client)
        except NotSent as error:
            self.sender.halt("outage", f"the API could not be reached: {error.message}")
            return False
        except BulkTopupError as error:
            self.sender.halt(error.code, error.message)
            return False
        if self.batch.balance_before is None:
            # The first run's balance is the one a reconciliation compares
            # with; a resume must not move it.
            self.journal.update_batch(
                self.batch.batch_id, balance_before=str(balance.balance)
            )
        # NOTE: drive packages are paid from driveBalance, but every unsent
        # row is compared with the main balance here.
        total = sum(tx.amount or 0 for tx in unsent)
        if balance.balance >= total:
            return True
        if not self.request.allow_partial:
            self.sender.halt(
                "insufficient_balance",
                f"balance {balance.balance} Taka is below the batch total {total}",
            )
            return False
        self.sender.budget = balance.balance
        return True

    async def _fetch_balance(self, client: TopupClient) -> Balance:
        """Return the balance, retrying a call that never reached the API."""

        async def fetch() -> Balance:
            # The rate limit covers every call, balance checks included.
            await self.sender.limiter.acquire()
            return await client.balance()

        retrying = self.sender.retry_policy(call="the balance check")
        return await retrying(fetch)

    async def _send_unsent(self) -> None:
        rows = self.journal.transactions(
            self.batch.batch_id, (State.PLANNED, State.HELD)
        )
        await self.sender.send(rows)

    async def _settle_open(self) -> None:
        for _ in range(5):
            open_rows = self.journal.transactions(self.batch.batch_id, SETTLE_STATES)
            if not open_rows or self._stopped() and self.interrupts:
                return
            resend = await self.settler.settle(
                [tx.trxid for tx in open_rows], immediately=False
            )
            if not resend:
                return
            await self._resend(resend)

    def _hold_unsent(self) -> None:
        """Mark rows left unsent by a halt or a paused operator as ``held``."""
        reason = self.sender.state.halted
        paused = self.sender.state.paused_operators
        planned = self.journal.transactions(self.batch.batch_id, (State.PLANNED,))
        over_budget = self.sender.state.over_budget
        to_hold = [
            tx.trxid
            for tx in planned
            if reason is not None or tx.operator in paused or tx.trxid in over_budget
        ]
        if reason is None and over_budget:
            reason = "insufficient_balance"
        if reason is None and paused:
            reason = "operator_paused"
        if to_hold:
            self.journal.transition_many(
                to_hold,
                State.HELD,
                cause=reason or "halt",
                fields={"reason": reason or "halt"},
            )
        if reason is not None:
            self.journal.update_batch(self.batch.batch_id, halted_reason=reason)

    async def _record_balance_after(self, client: TopupClient) -> None:
        if self.interrupts:
            return  # Ctrl-C means no new request of any kind.
        await self.sender.limiter.acquire()
        with contextlib.suppress(BulkTopupError):
            balance = await client.balance()
            self.journal.update_batch(
                self.batch.batch_id, balance_after=str(balance.balance)
            )


def exit_code_for(
    counts: dict[str, int], *, halted: bool, interrupted: bool
) -> tuple[int, str]:
    """Return the exit code and reason that a batch's state counts condense."""
    states = {State(name) for name, count in counts.items() if count}
    sendable = states - _NOT_SENDABLE
    if interrupted:
        return 130, "interrupted"
    if State.HELD in sendable or (halted and sendable & {State.PLANNED}):
        return 69, "halted"
    if sendable & (OPEN_STATES | {State.PLANNED}):
        return 75, "rows_open"
    if sendable & {State.FAILED, State.CANCELLED}:
        return 1, "rows_failed"
    return 0, "complete" if sendable else "nothing_to_send"


def _finish(
    journal: Journal, batch: Batch, request: RunRequest, *, interrupted: bool
) -> RunResult:
    summary = summarize(journal, batch)
    code, reason = exit_code_for(
        summary["counts"],
        halted=batch.halted_reason is not None,
        interrupted=interrupted,
    )
    if code == 69 and batch.halted_reason:
        reason = batch.halted_reason
    report_path = request.report_path or default_report_path(
        Path.cwd() / "reports", batch.batch_id, "csv"
    )
    write_report(journal, batch, report_path, report_path.suffix.lstrip(".") or "csv")
    result = RunResult(code, reason, batch.batch_id, summary, report_path)
    result.messages.extend(_advice(batch, summary["counts"], reason))
    return result


# Advice on the next step, by the batch's halt reason.
_HALT_ADVICE = {
    "insufficient_balance": "The balance does not cover the rows left: top up "
    "and run `bulk-topup resume`, or add --allow-partial to send what it covers.",
    "invalid_credentials": "The API refused the credentials: fix STU_KEY and "
    "STU_SECRET (or the config file) and run `bulk-topup resume`.",
    "outage": "The API could not be reached: run `bulk-topup resume` when it is "
    "back; rows in flight are settled through status first.",
    "rate_limited": "The API kept asking to slow down: run `bulk-topup resume` "
    "with a lower --rate.",
    "operator_paused": "An operator failed repeatedly and its rows were held: "
    "run `bulk-topup resume` to try them again.",
}


def _advice(batch: Batch, counts: dict[str, int], reason: str) -> list[str]:
    advice = []
    if reason in _HALT_ADVICE:
        advice.append(_HALT_ADVICE[reason])
    review = counts.get(State.REVIEW.value, 0)
    if review:
        advice.append(
            f"{review} rows need a person: status never saw their trxid. Check "
            f"them with the provider (bulk-topup show {batch.batch_id} --state "
            "review), then settle each with bulk-topup resolve."
        )
    open_rows = sum(
        counts.get(state.value, 0)
        for state in (State.SENDING, State.PROCESSING, State.UNKNOWN)
    )
    if open_rows:
        advice.append(
            f"{open_rows} rows are still open: run `bulk-topup reconcile "
            f"{batch.batch_id}` later to settle them."
        )
    return advice
