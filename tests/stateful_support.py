"""Pieces of the stateful send/settle test: time, crashes, sandbox, checks.

``FakeClock`` drives the sender, the settler and the sandbox, so nothing waits
for real time. ``CrashingClient`` stops the process at a chosen API call.
``SandboxHandle`` restarts the in-process sandbox with other settings while
its ledger file keeps the charges. The ``find_*`` functions return what breaks
an invariant, empty when it holds, so that each assert names the culprits.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from bulk_topup.client import Answer, StatusAnswer, TopupClient
from bulk_topup.errors import ApiError, ConfigError
from bulk_topup.journal import Journal
from bulk_topup.models import OPEN_STATES, State, is_legal_transition
from bulk_topup.sandbox import RunningSandbox, SandboxConfig, start_sandbox

RECHARGE_PATH = "/api/recharge"
STATUS_PATH = "/api/status"
# Unix time of the fake clock's zero: 2026-12-01 00:00 UTC.
EPOCH = 1_796_083_200.0
# Journal states in which a ledger charge of the trxid can be explained.
CHARGEABLE_STATES = OPEN_STATES | {State.SUCCESS, State.CANCELLED}

Result = TypeVar("Result")
Argument = TypeVar("Argument")


class FakeClock:
    """Seconds that move only when the test or an injected sleep moves them."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        """Return the seconds since the clock was made."""
        return self.seconds

    def unix(self) -> float:
        """Return the time as Unix seconds, for the sandbox."""
        return EPOCH + self.seconds

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.seconds += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Yield to the event loop, then move the clock to the wake-up time.

        The wake-up time is taken before yielding and the clock only moves
        forward, so concurrent sleeps overlap as they would in real time
        instead of adding up.
        """
        wake_at = self.seconds + max(0.0, seconds)
        await asyncio.sleep(0)
        self.seconds = max(self.seconds, wake_at)


class SimulatedCrash(BaseException):
    """The end of a killed process, after which nothing reaches the journal.

    It derives from ``BaseException`` so that no ``except Exception`` in the
    code under test can swallow it.
    """


@dataclass(frozen=True)
class CrashPoint:
    """The API call (counted from 0 over the client's life) that kills it.

    With ``before`` the request never leaves. Without it the request reaches
    the sandbox and its response is lost.
    """

    call: int
    before: bool


class CrashingClient(TopupClient):
    """A ``TopupClient`` whose process dies at ``crash_at``.

    After the crash every call raises ``SimulatedCrash``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.crash_at: CrashPoint | None = None
        self.dead = False

    async def recharge(self, fields: Mapping[str, Any]) -> Answer:
        """Send a recharge unless the process has died."""
        return await self._call(super().recharge, fields)

    async def status(self, trxid: str) -> StatusAnswer:
        """Ask status unless the process has died."""
        return await self._call(super().status, trxid)

    async def _call(
        self,
        call: Callable[[Argument], Awaitable[Result]],
        argument: Argument,
    ) -> Result:
        index = self.calls
        self.calls += 1
        crash = self.crash_at
        if crash is not None and crash.call == index and crash.before:
            self.dead = True
        if self.dead:
            raise SimulatedCrash(f"crashed before call {index}")
        try:
            result = await call(argument)
        except ApiError:
            self._die_if_due(index)
            raise
        self._die_if_due(index)
        return result

    def _die_if_due(self, index: int) -> None:
        if self.crash_at is not None and self.crash_at.call == index:
            self.dead = True
        if self.dead:
            raise SimulatedCrash(f"crashed after call {index}")


class SandboxHandle:
    """The in-process sandbox on one port, restartable with other settings."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._running: RunningSandbox | None = None
        # One client serves every check, because a client per request would
        # build an SSL context each time, which costs more than the request.
        self._http = httpx.Client(timeout=10, trust_env=False, verify=False)

    @property
    def is_up(self) -> bool:
        """Whether the sandbox is serving."""
        return self._running is not None

    @property
    def url(self) -> str:
        """Return the base URL, which stays the same across restarts."""
        return f"http://127.0.0.1:{self.config.port}"

    def start(self) -> None:
        """Start serving on the configured port, or a free one the first time."""
        try:
            self._running = start_sandbox(self.config, clock=self._clock)
        except ConfigError as error:
            # NOTE: a restart fails if another program took the port while the
            # sandbox was down, because clients keep the old base URL.
            raise RuntimeError(f"cannot restart the sandbox: {error}") from error
        self.config = replace(self.config, port=self._running.port)

    def close(self) -> None:
        """Stop serving and close the client that reads the ledger."""
        self.stop()
        self._http.close()

    def stop(self) -> None:
        """Stop serving. The ledger file keeps every charge."""
        if self._running is not None:
            self._running.stop()
            self._running = None

    def reconfigure(self, **changes: Any) -> None:
        """Apply new settings, restarting the sandbox if it is up."""
        was_up = self.is_up
        self.stop()
        self.config = replace(self.config, **changes)
        if was_up:
            self.start()

    def ledger(self) -> dict[str, Any]:
        """Return ``GET /sandbox/ledger`` with every fraction as ``Decimal``."""
        return self._get_json("/sandbox/ledger")

    def requests(self) -> list[dict[str, Any]]:
        """Return every request the sandbox received, oldest first."""
        entries: list[dict[str, Any]] = self._get_json("/sandbox/requests")["requests"]
        return entries

    def _get_json(self, path: str) -> dict[str, Any]:
        response = self._http.get(self.url + path)
        response.raise_for_status()
        document: dict[str, Any] = json.loads(response.text, parse_float=Decimal)
        return document


@dataclass(frozen=True)
class JournalRow:
    """The columns of a journaled transaction that the checks compare."""

    trxid: str
    state: State
    amount: int


def journal_rows(journal: Journal) -> dict[str, JournalRow]:
    """Return every transaction of every batch by trxid."""
    cursor = journal.conn.execute("SELECT trxid, state, amount FROM transactions")
    return {
        trxid: JournalRow(trxid, State(state), amount or 0)
        for trxid, state, amount in cursor.fetchall()
    }


def find_double_charges(charges: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Return the trxids that the ledger charged more than once."""
    counts = Counter(str(charge["trxid"]) for charge in charges)
    return {trxid: count for trxid, count in counts.items() if count > 1}


def find_illegal_events(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return each recorded state change that is not a legal transition.

    An event is also wrong when its old state is not the state that the
    previous event of the trxid left it in.
    """
    current: dict[str, State] = {}
    problems = []
    for event in events:
        trxid = str(event["trxid"])
        new = State(event["new_state"])
        old = None if event["old_state"] is None else State(event["old_state"])
        before = current.get(trxid)
        if old != before:
            problems.append(f"{trxid}: event from {old}, but the row was {before}")
        elif old is not None and not is_legal_transition(old, new):
            problems.append(f"{trxid}: {old} -> {new} ({event['cause']})")
        current[trxid] = new
    return problems


def find_changed_finals(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return each recorded state change that leaves a final state."""
    return [
        f"{event['trxid']}: {event['old_state']} -> {event['new_state']}"
        for event in events
        if event["old_state"] is not None and State(event["old_state"]).is_final
    ]


def find_unrecorded_states(
    rows: Mapping[str, JournalRow], events: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Return rows whose state differs from the last event recorded for them."""
    last = {str(event["trxid"]): State(event["new_state"]) for event in events}
    return {
        trxid: f"{row.state} after event {last.get(trxid)}"
        for trxid, row in rows.items()
        if last.get(trxid) is not row.state
    }


def find_unexplained_charges(
    rows: Mapping[str, JournalRow], charges: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Return charged trxids in a journal state that means nothing was charged."""
    unexplained = {}
    for charge in charges:
        trxid = str(charge["trxid"])
        row = rows.get(trxid)
        if row is None:
            unexplained[trxid] = "not in the journal"
        elif row.state not in CHARGEABLE_STATES:
            unexplained[trxid] = row.state.value
    return unexplained


def find_unconfirmed_finals(
    rows: Mapping[str, JournalRow], charges: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Return success and cancelled rows that the ledger's status contradicts."""
    statuses = {str(charge["trxid"]): str(charge["status"]) for charge in charges}
    expected = {State.SUCCESS: "Success", State.CANCELLED: "Cancel"}
    return {
        trxid: f"{row.state} but the ledger says {statuses.get(trxid)}"
        for trxid, row in rows.items()
        if row.state in expected and statuses.get(trxid) != expected[row.state]
    }


def uncancelled_total(charges: Iterable[Mapping[str, Any]]) -> Decimal:
    """Return the Taka that the ledger's charges keep after Cancel refunds."""
    return sum(
        (
            Decimal(charge["amount"])
            for charge in charges
            if charge["status"] != "Cancel"
        ),
        Decimal(0),
    )


def journal_charged_total(
    rows: Mapping[str, JournalRow], charges: Iterable[Mapping[str, Any]]
) -> Decimal:
    """Return the Taka of success rows plus open rows the ledger charged.

    An open row whose charge the provider has already cancelled is left out,
    because the sandbox refunded it.
    """
    uncancelled = {
        str(charge["trxid"]) for charge in charges if charge["status"] != "Cancel"
    }
    total = Decimal(0)
    for trxid, row in rows.items():
        if row.state is State.SUCCESS:
            total += row.amount
        elif row.state in OPEN_STATES and trxid in uncancelled:
            total += row.amount
    return total


def find_mixed_attempt_hashes(journal: Journal) -> dict[str, list[str | None]]:
    """Return trxids whose recharge attempts do not all share the row's hash."""
    stored = dict(
        journal.conn.execute("SELECT trxid, request_hash FROM transactions").fetchall()
    )
    seen: dict[str, set[str | None]] = {}
    cursor = journal.conn.execute(
        "SELECT trxid, request_hash FROM attempts WHERE call = 'recharge'"
    )
    for trxid, request_hash in cursor.fetchall():
        seen.setdefault(trxid, set()).add(request_hash)
    return {
        trxid: sorted(hashes, key=str)
        for trxid, hashes in seen.items()
        if hashes != {stored.get(trxid)}
    }


def find_foreign_request_hashes(
    journal: Journal, requests: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Return recharge requests whose body hash differs from the journal's."""
    stored = dict(
        journal.conn.execute("SELECT trxid, request_hash FROM transactions").fetchall()
    )
    return {
        str(request["trxid"]): str(request["body_sha256"])
        for request in requests
        if request["path"] == RECHARGE_PATH
        and request["body_sha256"] != stored.get(request["trxid"])
    }


def find_unjournaled_requests(
    journal: Journal, requests: Iterable[Mapping[str, Any]]
) -> dict[str, tuple[int, int]]:
    """Return trxids with more recharge requests received than attempts journaled.

    Every request must follow the commit of its attempt, so the sandbox can
    never have received more requests for a trxid than the journal opened.
    """
    received = Counter(
        str(request["trxid"])
        for request in requests
        if request["path"] == RECHARGE_PATH
    )
    attempts = Counter(
        trxid
        for (trxid,) in journal.conn.execute(
            "SELECT trxid FROM attempts WHERE call = 'recharge'"
        ).fetchall()
    )
    return {
        trxid: (count, attempts[trxid])
        for trxid, count in received.items()
        if count > attempts[trxid]
    }


def find_resends_without_status(
    journal: Journal, requests: Iterable[Mapping[str, Any]]
) -> dict[str, int]:
    """Return trxids sent again with no status query since the previous request.

    Only an HTTP 429 proves that a request was not taken, so each trxid may
    have as many such resends as it has attempts that ended ``rate_limited``.
    """
    rate_limited = Counter(
        trxid
        for (trxid,) in journal.conn.execute(
            "SELECT trxid FROM attempts WHERE outcome = 'rate_limited'"
        ).fetchall()
    )
    awaiting_status: dict[str, bool] = {}
    blind = Counter[str]()
    for request in requests:
        trxid = str(request["trxid"])
        if request["path"] == STATUS_PATH:
            awaiting_status[trxid] = False
        elif request["path"] == RECHARGE_PATH:
            if awaiting_status.get(trxid):
                blind[trxid] += 1
            awaiting_status[trxid] = True
    return {
        trxid: count for trxid, count in blind.items() if count > rate_limited[trxid]
    }
