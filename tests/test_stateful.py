"""A hypothesis state machine over planning, sending, crashes and settling.

It plans small batches into a real journal file and sends them through
``Sender`` and ``Settler`` to the real sandbox on loopback. Random orders of
steps mix in crashes (at a chosen API call, or while idle), restarts that
settle what was in flight, provider-side time passing, sandbox faults and
outages, and de-duplication switched off. After every step the machine checks
the ledger against the journal: at most one charge per trxid, only legal
transitions, no final state left, money accounted for, and one request body
per trxid.

The runs are derandomized, so every run, in CI too, tries the same examples.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from stateful_support import (
    CrashingClient,
    CrashPoint,
    FakeClock,
    SandboxHandle,
    SimulatedCrash,
    find_changed_finals,
    find_double_charges,
    find_foreign_request_hashes,
    find_illegal_events,
    find_mixed_attempt_hashes,
    find_resends_without_status,
    find_unconfirmed_finals,
    find_unexplained_charges,
    find_unjournaled_requests,
    find_unrecorded_states,
    journal_charged_total,
    journal_rows,
    uncancelled_total,
)

from bulk_topup.client import Answer, Credentials, Timeouts, TopupClient
from bulk_topup.journal import Journal, Transaction
from bulk_topup.limiter import RateLimiter
from bulk_topup.models import (
    UNSENT_STATES,
    SourceTable,
    State,
    Validation,
    ValidRow,
)
from bulk_topup.planning import DHAKA, PlanOptions, plan_batch
from bulk_topup.sandbox import SandboxConfig
from bulk_topup.sender import Sender, SendSettings
from bulk_topup.settling import SETTLE_STATES, Settler, SettleSettings

Result = TypeVar("Result")

TARGET = "sandbox"
NOON = datetime(2026, 12, 4, 12, 0, tzinfo=DHAKA)
CREDENTIALS = Credentials("stateful-key", "stateful-secret")
# Two Grameenphone numbers and one Robi number with a few amounts, so that
# later batches sometimes repeat earlier rows, and the circuit breaker has two
# operators to tell apart.
NUMBERS = {"01711000001": "GP", "01711000002": "GP", "01811000003": "RB"}
AMOUNTS = tuple(range(10, 100, 10))
# Planning a file with the name of an earlier batch of the day supersedes
# that batch's unsent rows. Four names keep supersession from claiming most
# rows.
FILE_NAMES = ("payouts.csv", "bonus.csv", "refunds.csv", "promo.csv")
# One request in flight at a time keeps every run repeatable. With several,
# the order of responses over loopback would decide which row a low balance
# rejects and which responses a crash loses. Hypothesis rejects a test that
# behaves differently on the same example.
SEND_SETTINGS = SendSettings(
    rate=1000.0,
    concurrency=1,
    row_retries=2,
    batch_retries=20,
    backoff_initial=0.1,
    backoff_max=1.0,
    group_window=0.05,
)
TIMEOUTS = Timeouts(connect=2.0, read=5.0, write=2.0, pool=5.0)
FAULTS = (
    "refuse",
    "5xx-before-charge",
    "5xx-after-charge",
    "drop-before-charge",
    "drop-after-charge",
    "429",
    "status-lag",
)


@dataclass(frozen=True)
class World:
    """The settings that hold for one whole run of the machine.

    ``provider_dedupes`` lets the settler resend an unseen trxid after the
    grace period. It is only drawn true together with a de-duplicating
    sandbox, because setting it for a provider that charges a repeated trxid
    again is a misconfiguration that the tool cannot detect.
    """

    seed: int
    opening_balance: int
    cancel_rate: float
    faults: tuple[tuple[str, float], ...]
    status_lag_seconds: float
    sandbox_dedupes: bool
    provider_dedupes: bool
    grace_seconds: float
    breaker_threshold: int
    provider_changes: bool


@dataclass(frozen=True)
class CrashPlan:
    """A crash at the API call ``offset`` calls from now."""

    offset: int
    before: bool


@dataclass(frozen=True)
class ProviderChange:
    """A change to the sandbox: ``faults``, ``dedupe`` or ``outage``.

    ``faults`` replaces the injected faults with ``faults``. ``dedupe`` flips
    de-duplication of repeated trxids. ``outage`` stops a running sandbox, or
    starts a stopped one.
    """

    kind: str
    faults: tuple[tuple[str, float], ...] = ()


@dataclass
class Process:
    """The in-memory objects of one bulk-topup process, lost in a crash."""

    client: CrashingClient
    sender: Sender
    settler: Settler


# Up to two faults at once. Their rates add up to 1 at most, as the sandbox
# requires.
FAULT_SETS = st.lists(
    st.tuples(st.sampled_from(FAULTS), st.sampled_from((0.25, 0.5))),
    max_size=2,
    unique_by=lambda fault: fault[0],
).map(tuple)
WORLDS = st.builds(
    World,
    seed=st.integers(0, 2**16),
    opening_balance=st.sampled_from((1_000_000, 45)),
    cancel_rate=st.sampled_from((0.0, 0.5)),
    faults=FAULT_SETS,
    status_lag_seconds=st.just(3.0),
    sandbox_dedupes=st.booleans(),
    provider_dedupes=st.booleans(),
    # Real time passes only milliseconds in a run, so these two values mean
    # "the grace period is over" and "it never ends".
    grace_seconds=st.sampled_from((0.0, 3600.0)),
    breaker_threshold=st.sampled_from((0, 3)),
    provider_changes=st.just(True),
)
# The riskiest corner: a request charged while its response was lost (a
# crash or a dropped connection), status not yet showing the trxid, and a
# resend rejected. Only the grace period, the de-duplication setting and the
# journal's attempts keep such a row from a second charge, or from being
# marked failed although it was charged.
LOST_RESPONSE_WORLDS = st.builds(
    World,
    seed=st.integers(0, 2**16),
    opening_balance=st.just(1_000_000),
    cancel_rate=st.sampled_from((0.0, 0.5)),
    faults=st.sampled_from(
        (
            (("status-lag", 0.5), ("refuse", 0.5)),
            (("status-lag", 0.5), ("refuse", 0.25), ("drop-after-charge", 0.25)),
        )
    ),
    # Long enough that status still lags when the next command runs.
    status_lag_seconds=st.just(60.0),
    sandbox_dedupes=st.just(False),
    provider_dedupes=st.booleans(),
    grace_seconds=st.just(0.0),
    breaker_threshold=st.just(0),
    provider_changes=st.just(False),
)
ROWS = st.lists(
    st.tuples(st.sampled_from(sorted(NUMBERS)), st.sampled_from(AMOUNTS)),
    min_size=1,
    max_size=4,
)
# Three sends in four take every unsent row, as a run does. The rest take a
# subset, as a run stopped by Ctrl-C leaves it.
PICKS = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.frozensets(st.integers(0, 3), min_size=1, max_size=4),
)
PROVIDER_CHANGES = st.one_of(
    st.builds(ProviderChange, kind=st.just("faults"), faults=FAULT_SETS),
    st.builds(ProviderChange, kind=st.sampled_from(("dedupe", "outage"))),
)
# An offset past the last API call of the step means no crash at all.
CRASHES = st.none() | st.builds(
    CrashPlan, offset=st.integers(0, 3), before=st.booleans()
)


def validation_of(rows: list[tuple[str, int]], file_name: str) -> Validation:
    """Return a validated batch of recharge rows, as a file would give."""
    valid = tuple(
        ValidRow(
            source_row=index + 2,
            number=number,
            operator=NUMBERS[number],
            type="prepaid",
            amount=amount,
            parts=(amount,),
        )
        for index, (number, amount) in enumerate(rows)
    )
    table = SourceTable(
        path=file_name, format="csv", header=(), records=(), header_row=1
    )
    return Validation(table=table, rows=valid)


class SendSettleMachine(RuleBasedStateMachine):
    """Plans, sends, crashes, restarts and settles against a faulty sandbox.

    ``machine_for`` adds the step that draws the run's ``World``.
    """

    batches = Bundle("batches")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="bulk-topup-stateful-"))
        self.journal_path = self.directory / "journal.sqlite"
        self.journal = Journal.open(self.journal_path)
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop()
        self.world: World | None = None
        self.handle: SandboxHandle | None = None
        self.process: Process | None = None

    # Set-up and tear-down

    def start_world(self, world: World) -> None:
        """Start the sandbox for a run under these settings."""
        self.world = world
        config = SandboxConfig(
            state_path=self.directory / "ledger.sqlite",
            balance=world.opening_balance,
            processing_seconds=2.0,
            cancel_rate=world.cancel_rate,
            seed=world.seed,
            status_lag_seconds=world.status_lag_seconds,
            retry_after=0.5,
            faults=world.faults,
            dedupe=world.sandbox_dedupes or world.provider_dedupes,
        )
        self.handle = SandboxHandle(config, self.clock.unix)
        self.handle.start()

    def teardown(self) -> None:
        """Stop the process and the sandbox and delete the run's files."""
        try:
            if self.process is not None:
                self._run(self.process.client.aclose())
            if self.handle is not None:
                self.handle.close()
        finally:
            self.journal.close()
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # Rules

    @precondition(lambda self: self.count_unsent_batches() < 3)
    @rule(target=batches, rows=ROWS, file_name=st.sampled_from(FILE_NAMES))
    def plan(self, rows: list[tuple[str, int]], file_name: str) -> str:
        """Plan a batch and send nothing, as a run killed right after planning."""
        return self._plan(rows, file_name)

    @precondition(lambda self: self.count_unsent_batches() < 3)
    @rule(
        target=batches,
        rows=ROWS,
        file_name=st.sampled_from(FILE_NAMES),
        crash=CRASHES,
    )
    def run_file(
        self, rows: list[tuple[str, int]], file_name: str, crash: CrashPlan | None
    ) -> str:
        """Plan a batch and send every unsent row of it, as ``run FILE`` does."""
        batch_id = self._plan(rows, file_name)
        self._send(batch_id, None, crash)
        return batch_id

    @rule(batch_id=batches, picks=PICKS, crash=CRASHES)
    def send(
        self, batch_id: str, picks: frozenset[int] | None, crash: CrashPlan | None
    ) -> None:
        """Send some unsent rows of a batch, maybe crashing at an API call."""
        self._send(batch_id, picks, crash)

    @rule(
        timeout=st.sampled_from((0.0, 30.0)),
        immediately=st.booleans(),
        crash=CRASHES,
    )
    def settle(
        self, timeout: float, immediately: bool, crash: CrashPlan | None
    ) -> None:
        """Poll status for every open row and resend what the settler returns."""
        process = self._process()
        self._arm(process, crash)
        try:
            self._run(self._settle(process, SETTLE_STATES, timeout, immediately))
        except SimulatedCrash:
            self._end_process()

    @precondition(lambda self: self.process is not None)
    @rule()
    def crash_while_idle(self) -> None:
        """Kill the process between two commands."""
        self._end_process()

    @rule(seconds=st.sampled_from((0.5, 2.0, 5.0)))
    def pass_time(self, seconds: float) -> None:
        """Let provider-side time pass: Processing becomes Success or Cancel."""
        self.clock.advance(seconds)

    @precondition(lambda self: self.world is not None and self.world.provider_changes)
    @rule(change=PROVIDER_CHANGES)
    def change_provider(self, change: ProviderChange) -> None:
        """Change the sandbox: its faults, its de-duplication, or an outage."""
        handle = self._handle()
        if change.kind == "faults":
            handle.reconfigure(faults=change.faults)
        elif change.kind == "dedupe":
            # A provider configured as de-duplicating keeps de-duplicating.
            if not self._world().provider_dedupes:
                handle.reconfigure(dedupe=not handle.config.dedupe)
        elif handle.is_up:
            handle.stop()
        else:
            handle.start()

    # Invariants

    @invariant()
    def transitions_are_legal(self) -> None:
        """Check every recorded state change against the legal transitions."""
        events = self.journal.events()
        rows = journal_rows(self.journal)
        assert find_illegal_events(events) == []
        assert find_changed_finals(events) == []
        assert find_unrecorded_states(rows, events) == {}

    @invariant()
    def request_bodies_match(self) -> None:
        """Check that every attempt at a trxid sent the same body."""
        assert find_mixed_attempt_hashes(self.journal) == {}
        handle = self._handle()
        if not handle.is_up:
            return  # The ledger cannot change while the sandbox is down.
        requests = handle.requests()
        assert find_foreign_request_hashes(self.journal, requests) == {}
        assert find_unjournaled_requests(self.journal, requests) == {}
        assert find_resends_without_status(self.journal, requests) == {}

    @invariant()
    def charges_are_accounted(self) -> None:
        """Check the ledger's charges and balance against the journal."""
        handle = self._handle()
        if not handle.is_up:
            return  # The ledger cannot change while the sandbox is down.
        ledger = handle.ledger()
        charges = ledger["charges"]
        rows = journal_rows(self.journal)
        spent = Decimal(handle.config.balance) - Decimal(ledger["balance"])
        assert find_double_charges(charges) == {}
        assert find_unexplained_charges(rows, charges) == {}
        assert find_unconfirmed_finals(rows, charges) == {}
        assert spent == uncancelled_total(charges)
        assert spent == journal_charged_total(rows, charges)

    # Helpers

    def count_unsent_batches(self) -> int:
        """Return how many batches still have rows to send."""
        batches = self.journal.list_batches()
        return sum(
            1
            for batch in batches
            if self.journal.transactions(batch.batch_id, UNSENT_STATES)
        )

    def _run(self, coroutine: Coroutine[Any, Any, Result]) -> Result:
        return self.loop.run_until_complete(coroutine)

    def _handle(self) -> SandboxHandle:
        assert self.handle is not None
        return self.handle

    def _world(self) -> World:
        assert self.world is not None
        return self.world

    def _process(self) -> Process:
        """Return the running process, or start one as a new command would.

        A new process first settles the rows that a crashed one left in
        flight, as ``resume`` does before it sends anything.
        """
        if self.process is not None:
            return self.process
        process = self._start_process()
        self.process = process
        in_flight = (State.SENDING, State.UNKNOWN)
        self._run(self._settle(process, in_flight, 30.0, immediately=True))
        return process

    def _start_process(self) -> Process:
        world = self._world()
        client = self._make_client()
        limiter = RateLimiter(
            SEND_SETTINGS.rate, clock=self.clock.monotonic, sleep=self.clock.sleep
        )
        sender = Sender(
            self.journal,
            client,
            limiter,
            replace(SEND_SETTINGS, breaker_threshold=world.breaker_threshold),
            target=TARGET,
            clock=self.clock.monotonic,
            sleep=self.clock.sleep,
        )
        settle_settings = SettleSettings(
            first_interval=1.0,
            max_interval=4.0,
            grace_seconds=world.grace_seconds,
            provider_dedupes=world.provider_dedupes,
        )
        settler = Settler(
            self.journal,
            client,
            limiter,
            settle_settings,
            clock=self.clock.monotonic,
            sleep=self.clock.sleep,
        )
        return Process(client, sender, settler)

    def _make_client(self) -> CrashingClient:
        # Without keep-alive every request opens its own connection, so a
        # sandbox restart never leaves a stale pooled connection whose reset
        # would make the next response ambiguous by chance. The sandbox speaks
        # plain HTTP, so skipping the CA bundle only saves its slow loading.
        transport = httpx.AsyncHTTPTransport(
            verify=False,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=0),
        )
        return CrashingClient(
            self._handle().url,
            CREDENTIALS,
            concurrency=SEND_SETTINGS.concurrency,
            timeouts=TIMEOUTS,
            transport=transport,
        )

    def _plan(self, rows: list[tuple[str, int]], file_name: str) -> str:
        """Plan a batch, or find the one these rows already belong to."""
        result = plan_batch(
            self.journal,
            validation_of(rows, file_name),
            target=TARGET,
            options=PlanOptions(),
            now=NOON,
        )
        return result.batch.batch_id

    def _send(
        self, batch_id: str, picks: frozenset[int] | None, crash: CrashPlan | None
    ) -> None:
        process = self._process()
        unsent = self.journal.transactions(batch_id, UNSENT_STATES)
        rows = [
            tx for index, tx in enumerate(unsent) if picks is None or index in picks
        ]
        self._arm(process, crash)
        try:
            self._run(process.sender.send(rows))
        except SimulatedCrash:
            self._end_process()
            return
        self._hold_unsent(process, batch_id)
        if process.sender.state.halted or process.sender.state.paused_operators:
            # A run ends after a halt. The next command starts a new process.
            self._end_process()

    def _arm(self, process: Process, crash: CrashPlan | None) -> None:
        if crash is None:
            process.client.crash_at = None
            return
        call = process.client.calls + crash.offset
        process.client.crash_at = CrashPoint(call=call, before=crash.before)

    def _end_process(self) -> None:
        """Drop the process, as a crash or the end of a command does.

        The journal is closed and opened again from its file, so nothing
        kept in memory survives.
        """
        process = self.process
        self.process = None
        if process is not None:
            self._run(process.client.aclose())
        self.journal.close()
        self.journal = Journal.open(self.journal_path)

    async def _settle(
        self,
        process: Process,
        states: tuple[State, ...],
        timeout: float,
        immediately: bool,
    ) -> None:
        """Settle rows in these states, then resend the ones due, as runs do."""
        process.settler.settings = replace(process.settler.settings, timeout=timeout)
        trxids = [tx.trxid for tx in self._rows_in(states)]
        resend = await process.settler.settle(trxids, immediately=immediately)
        rows = [tx for tx in map(self.journal.get, resend) if tx is not None]
        if rows:
            await process.sender.send(rows)

    def _rows_in(self, states: tuple[State, ...]) -> list[Transaction]:
        rows = []
        for batch in self.journal.list_batches():
            rows.extend(self.journal.transactions(batch.batch_id, states))
        return rows

    def _hold_unsent(self, process: Process, batch_id: str) -> None:
        """Hold the batch's planned rows after a halt, as a run does."""
        halted = process.sender.state.halted
        paused = process.sender.state.paused_operators
        planned = self.journal.transactions(batch_id, (State.PLANNED,))
        to_hold = [
            tx.trxid for tx in planned if halted is not None or tx.operator in paused
        ]
        if to_hold:
            self.journal.transition_many(
                to_hold, State.HELD, cause=halted or "operator_paused"
            )


def machine_for(worlds: st.SearchStrategy[World]) -> type[SendSettleMachine]:
    """Return the machine that starts each run in a world drawn from worlds."""

    class Machine(SendSettleMachine):
        @initialize(world=worlds)
        def start(self, world: World) -> None:
            self.start_world(world)

    return Machine


def check_machine(worlds: st.SearchStrategy[World], examples: int) -> None:
    """Run the machine over a fixed sequence of examples, the same every run."""
    run_state_machine_as_test(
        machine_for(worlds),
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_send_settle_machine_keeps_invariants() -> None:
    check_machine(WORLDS, examples=60)


def test_machine_with_lost_responses_keeps_invariants() -> None:
    check_machine(LOST_RESPONSE_WORLDS, examples=90)


class FailingFirstClient(TopupClient):
    """A client whose first recharge raises an error no sender expects."""

    def __init__(self) -> None:
        super().__init__(
            "http://127.0.0.1:9",
            CREDENTIALS,
            transport=httpx.MockTransport(accept_recharge),
        )
        self.recharges = 0

    async def recharge(self, fields: Mapping[str, Any]) -> Answer:
        """Raise on the first call, then send as usual."""
        self.recharges += 1
        if self.recharges == 1:
            raise RuntimeError("journal write failed")
        return await super().recharge(fields)


def accept_recharge(request: httpx.Request) -> httpx.Response:
    """Return the API's acceptance of a recharge."""
    return httpx.Response(200, json={"result": True, "message": "Recharge successful"})


def test_sender_raises_error_of_finished_row(tmp_path: Path) -> None:
    # With one request in flight, the failed row's task has finished and left
    # the sender's task set before the next row starts. Its error must still
    # reach the caller, and no later row may be sent.
    journal = Journal.open(tmp_path / "journal.sqlite")
    rows = [("01711000001", 10), ("01711000002", 20)]
    plan = plan_batch(
        journal,
        validation_of(rows, "payouts.csv"),
        target=TARGET,
        options=PlanOptions(),
        now=NOON,
    )
    batch_id = plan.batch.batch_id
    sender = Sender(
        journal,
        FailingFirstClient(),
        RateLimiter(1000.0),
        SendSettings(rate=1000.0, concurrency=1),
        target=TARGET,
    )

    with pytest.raises(RuntimeError, match="journal write failed"):
        asyncio.run(sender.send(journal.transactions(batch_id, UNSENT_STATES)))

    states = [tx.state for tx in journal.transactions(batch_id)]
    assert states == [State.SENDING, State.PLANNED]
