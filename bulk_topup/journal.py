"""The SQLite journal: the only writer of batches, transactions and attempts.

Every state change is one ``BEGIN IMMEDIATE`` transaction, checked against
``models.TRANSITIONS`` and recorded in the ``events`` table, so that the
journal is both the run's memory and its audit record. The file is opened in
WAL mode with ``synchronous=FULL``: a commit has reached the disk before the
function that made it returns, which is what lets a row be marked ``sending``
before its request leaves the process.

The journal stores no request body and no secret: an attempt keeps a hash of
the body with the credentials left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import JournalError, JournalUnusable
from .models import FINAL_STATES, State, is_legal_transition

BUSY_TIMEOUT_MS = 10_000

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE batches (
        batch_id TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        file TEXT NOT NULL,
        file_name TEXT NOT NULL,
        day TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        explicit_id INTEGER NOT NULL,
        options TEXT NOT NULL,
        created_at TEXT NOT NULL,
        halted_reason TEXT,
        balance_before TEXT,
        balance_after TEXT
    );
    CREATE INDEX batches_identity ON batches (target, day, fingerprint);
    CREATE TABLE transactions (
        trxid TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL REFERENCES batches (batch_id),
        seq INTEGER NOT NULL,
        source_row INTEGER NOT NULL,
        part INTEGER NOT NULL,
        parts INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        occurrence INTEGER NOT NULL,
        row_key TEXT NOT NULL,
        number TEXT,
        operator TEXT,
        type TEXT,
        amount INTEGER,
        package_id TEXT,
        reference TEXT,
        state TEXT NOT NULL,
        state_at TEXT NOT NULL,
        reason TEXT,
        repeat_of TEXT,
        duplicate_of INTEGER,
        retry_of TEXT,
        request_hash TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        first_sent_at TEXT,
        last_attempt_at TEXT,
        final_at TEXT,
        message TEXT,
        provider_status TEXT,
        conflict INTEGER NOT NULL DEFAULT 0,
        webhook_comment TEXT,
        webhook_note TEXT,
        resolution_note TEXT,
        warnings TEXT NOT NULL DEFAULT '[]',
        notes TEXT NOT NULL DEFAULT '[]',
        raw TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX transactions_batch ON transactions (batch_id, seq);
    CREATE INDEX transactions_row_key ON transactions (row_key, state);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        trxid TEXT NOT NULL REFERENCES transactions (trxid),
        attempt INTEGER NOT NULL,
        call TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        http_status INTEGER,
        message TEXT,
        request_hash TEXT
    );
    CREATE INDEX attempts_trxid ON attempts (trxid);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        trxid TEXT NOT NULL,
        old_state TEXT,
        new_state TEXT NOT NULL,
        at TEXT NOT NULL,
        cause TEXT
    );
    CREATE INDEX events_trxid ON events (trxid);
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        received_at TEXT NOT NULL,
        trxid TEXT,
        status TEXT,
        comment TEXT,
        note TEXT,
        updated_at TEXT,
        outcome TEXT NOT NULL
    );
    """,
)


def utc_now() -> str:
    """Return the current time as ISO 8601 UTC with its offset."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Transaction:
    """One journaled transaction, as read back from the journal."""

    trxid: str
    batch_id: str
    seq: int
    source_row: int
    part: int
    parts: int
    generation: int
    occurrence: int
    row_key: str
    number: str | None
    operator: str | None
    type: str | None
    amount: int | None
    package_id: str | None
    reference: str | None
    state: State
    state_at: str
    reason: str | None
    repeat_of: str | None
    duplicate_of: int | None
    retry_of: str | None
    request_hash: str | None
    attempts: int
    first_sent_at: str | None
    last_attempt_at: str | None
    final_at: str | None
    message: str | None
    provider_status: str | None
    conflict: bool
    webhook_comment: str | None
    webhook_note: str | None
    resolution_note: str | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    raw: Mapping[str, str]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Transaction:
        """Build a transaction from a ``transactions`` row."""
        values = dict(row)
        values["state"] = State(values["state"])
        values["conflict"] = bool(values["conflict"])
        values["warnings"] = tuple(json.loads(values["warnings"]))
        values["notes"] = tuple(json.loads(values["notes"]))
        values["raw"] = json.loads(values["raw"])
        return cls(**values)


@dataclass(frozen=True)
class Batch:
    """One journaled batch with its plan options."""

    batch_id: str
    target: str
    kind: str
    file: str
    file_name: str
    day: str
    fingerprint: str
    explicit_id: bool
    options: Mapping[str, Any]
    created_at: str
    halted_reason: str | None
    balance_before: str | None
    balance_after: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Batch:
        """Build a batch from a ``batches`` row."""
        values = dict(row)
        values["explicit_id"] = bool(values["explicit_id"])
        values["options"] = json.loads(values["options"])
        return cls(**values)


class IllegalTransition(JournalError):
    """A state change outside the legal transitions: always a bug."""

    code = "illegal_transition"


class Journal:
    """The journal file: batches, transactions, attempts, events, webhooks."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.conn = connection
        self.db = sqlite_utils.Database(connection)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Journal:
        """Open the journal at path, creating it with mode 0600 if needed."""
        journal_path = Path(path)
        try:
            journal_path.parent.mkdir(parents=True, exist_ok=True)
            _create_private_file(journal_path)
            connection = sqlite3.connect(
                journal_path,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as error:
            raise JournalUnusable(
                f"Cannot open the journal {journal_path}: {error}. "
                "Choose another path with --journal."
            ) from error
        journal = cls(journal_path, connection)
        journal._configure()
        journal._migrate()
        return journal

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _configure(self) -> None:
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as error:
            raise JournalUnusable(
                f"The journal {self.path} is not a usable SQLite database: "
                f"{error}. Choose another path with --journal."
            ) from error

    def _migrate(self) -> None:
        with self.write():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Run a block in one ``BEGIN IMMEDIATE`` transaction."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise JournalError(
                f"The journal {self.path} stayed busy for "
                f"{BUSY_TIMEOUT_MS // 1000} seconds: {error}."
            ) from error
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # Batches

    def insert_batch(
        self,
        batch: Mapping[str, Any],
        transactions: Sequence[Mapping[str, Any]],
    ) -> None:
        """Insert a batch and all its transactions in one transaction."""
        now = utc_now()
        batch_row = dict(batch)
        batch_row["options"] = json.dumps(batch_row["options"], sort_keys=True)
        batch_row.setdefault("created_at", now)
        rows = [_encode_transaction(tx, now) for tx in transactions]
        with self.write():
            self.db.table("batches").insert(batch_row)
            self.db.table("transactions").insert_all(rows, batch_size=500)
            self.db.table("events").insert_all(
                (
                    {
                        "trxid": row["trxid"],
                        "old_state": None,
                        "new_state": row["state"],
                        "at": now,
                        "cause": row.get("reason") or "planned",
                    }
                    for row in rows
                ),
                batch_size=500,
            )

    def add_transactions(self, transactions: Sequence[Mapping[str, Any]]) -> None:
        """Insert new transactions of an existing batch (a retry generation)."""
        now = utc_now()
        rows = [_encode_transaction(tx, now) for tx in transactions]
        with self.write():
            self.db.table("transactions").insert_all(rows, batch_size=500)
            for row in rows:
                self._record_event(
                    row["trxid"], None, State(row["state"]), now, "retry"
                )

    def get_batch(self, batch_id: str) -> Batch | None:
        """Return the batch with this id, or None."""
        rows = list(self.db["batches"].rows_where("batch_id = ?", [batch_id]))
        return Batch.from_row(rows[0]) if rows else None

    def find_batch(self, target: str, day: str, fingerprint: str) -> Batch | None:
        """Return the batch that a file with this identity resumes, or None."""
        rows = self.db["batches"].rows_where(
            "target = ? AND day = ? AND fingerprint = ? AND explicit_id = 0",
            [target, day, fingerprint],
            order_by="created_at",
        )
        for row in rows:
            return Batch.from_row(row)
        return None

    def list_batches(self) -> list[Batch]:
        """Return every batch, oldest first."""
        rows = self.db["batches"].rows_where(order_by="created_at, rowid")
        return [Batch.from_row(row) for row in rows]

    def latest_batch(self, target: str | None = None) -> Batch | None:
        """Return the newest batch, of one target if given."""
        batches = self.list_batches()
        if target is not None:
            batches = [batch for batch in batches if batch.target == target]
        return batches[-1] if batches else None

    def batches_of_file(self, target: str, day: str, file_name: str) -> list[Batch]:
        """Return the batches made from a file of this name on this day."""
        rows = self.db["batches"].rows_where(
            "target = ? AND day = ? AND file_name = ?",
            [target, day, file_name],
            order_by="created_at",
        )
        return [Batch.from_row(row) for row in rows]

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        """Set fields of a batch (halt reason, balances)."""
        with self.write():
            self.db.table("batches").update(batch_id, fields)

    # Transactions

    def transactions(
        self, batch_id: str, states: Iterable[State] | None = None
    ) -> list[Transaction]:
        """Return a batch's transactions in plan order, of some states if given."""
        where = "batch_id = ?"
        params: list[Any] = [batch_id]
        if states is not None:
            wanted = [state.value for state in states]
            where += f" AND state IN ({', '.join('?' for _ in wanted)})"
            params.extend(wanted)
        rows = self.db["transactions"].rows_where(where, params, order_by="seq")
        return [Transaction.from_row(row) for row in rows]

    def get(self, trxid: str) -> Transaction | None:
        """Return one transaction by trxid, or None."""
        cursor = self.conn.execute(
            "SELECT * FROM transactions WHERE trxid = ?", [trxid]
        )
        row = cursor.fetchone()
        if row is None:
            return None
        columns = [column[0] for column in cursor.description]
        return Transaction.from_row(dict(zip(columns, row, strict=True)))

    def state_counts(self, batch_id: str) -> dict[str, int]:
        """Return the number of transactions per state in a batch."""
        cursor = self.conn.execute(
            "SELECT state, count(*) FROM transactions WHERE batch_id = ? "
            "GROUP BY state",
            [batch_id],
        )
        return {state: count for state, count in cursor.fetchall()}

    def matching_transactions(
        self, target: str, row_key: str, exclude_batch: str
    ) -> list[Transaction]:
        """Return transactions of other batches of a target with this row key."""
        rows = self.conn.execute(
            "SELECT t.* FROM transactions t JOIN batches b USING (batch_id) "
            "WHERE t.row_key = ? AND b.target = ? AND t.batch_id != ?",
            [row_key, target, exclude_batch],
        )
        columns = [column[0] for column in rows.description]
        return [
            Transaction.from_row(dict(zip(columns, row, strict=True))) for row in rows
        ]

    def transition(
        self,
        trxid: str,
        new_state: State,
        *,
        cause: str,
        fields: Mapping[str, Any] | None = None,
    ) -> Transaction:
        """Move one transaction to a new state in its own transaction."""
        with self.write():
            return self._transition(trxid, new_state, cause, fields or {})

    def transition_many(
        self,
        trxids: Sequence[str],
        new_state: State,
        *,
        cause: str,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Move several transactions to one new state in a single commit."""
        with self.write():
            for trxid in trxids:
                self._transition(trxid, new_state, cause, fields or {})

    def _transition(
        self, trxid: str, new_state: State, cause: str, fields: Mapping[str, Any]
    ) -> Transaction:
        current = self.get(trxid)
        if current is None:
            raise JournalError(f"No transaction with trxid {trxid} in the journal.")
        if not is_legal_transition(current.state, new_state):
            raise IllegalTransition(
                f"Refusing to move {trxid} from {current.state} to {new_state} "
                f"({cause}): that transition is not allowed."
            )
        now = utc_now()
        changes = dict(fields)
        changes["state"] = new_state.value
        changes["state_at"] = now
        if new_state in FINAL_STATES:
            changes["final_at"] = now
        self._update(trxid, changes)
        self._record_event(trxid, current.state, new_state, now, cause)
        return self.get(trxid)  # type: ignore[return-value]

    def _update(self, trxid: str, changes: Mapping[str, Any]) -> None:
        # Plain SQL: sqlite-utils' update() reads the schema on every call,
        # which costs more than the update itself on the sending path.
        names = list(changes)
        unknown = set(names) - _TRANSACTION_COLUMNS
        if unknown:
            raise JournalError(f"Unknown transaction fields: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in names)
        self.conn.execute(
            f"UPDATE transactions SET {assignments} WHERE trxid = ?",
            [*(changes[name] for name in names), trxid],
        )

    def _record_event(
        self, trxid: str, old: State | None, new: State, at: str, cause: str
    ) -> None:
        self.conn.execute(
            "INSERT INTO events (trxid, old_state, new_state, at, cause) "
            "VALUES (?, ?, ?, ?, ?)",
            [trxid, old.value if old else None, new.value, at, cause],
        )

    def update_fields(self, trxid: str, **fields: Any) -> None:
        """Set fields that are not the state (message, conflict flag, ...)."""
        if "state" in fields:
            raise JournalError("update_fields cannot change a state; use transition")
        with self.write():
            self._update(trxid, fields)

    # Attempts

    def start_attempts(
        self, starts: Sequence[tuple[str, str]], *, call: str = "recharge"
    ) -> dict[str, int]:
        """Mark rows ``sending`` and open an attempt for each, in one commit.

        ``starts`` pairs each trxid with the hash of its request body. A row
        already in ``sending`` (a retry of a request that never left) keeps its
        state. Returns the attempt number of each trxid.
        """
        now = utc_now()
        numbers: dict[str, int] = {}
        with self.write():
            for trxid, request_hash in starts:
                current = self.get(trxid)
                if current is None:
                    raise JournalError(f"No transaction with trxid {trxid}.")
                _check_request_hash(current, request_hash)
                if current.state is not State.SENDING:
                    self._transition(trxid, State.SENDING, "send", {})
                numbers[trxid] = current.attempts + 1
                self._update(
                    trxid,
                    {
                        "attempts": current.attempts + 1,
                        "request_hash": request_hash,
                        "last_attempt_at": now,
                        "first_sent_at": current.first_sent_at or now,
                    },
                )
                self.conn.execute(
                    "INSERT INTO attempts (trxid, attempt, call, started_at, "
                    "request_hash) VALUES (?, ?, ?, ?, ?)",
                    [trxid, numbers[trxid], call, now, request_hash],
                )
        return numbers

    def finish_attempt(
        self,
        trxid: str,
        attempt: int,
        *,
        outcome: str,
        http_status: int | None,
        message: str | None,
        new_state: State | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an attempt's outcome and the state it leads to, in one commit."""
        with self.write():
            self.conn.execute(
                "UPDATE attempts SET finished_at = ?, outcome = ?, "
                "http_status = ?, message = ? WHERE trxid = ? AND attempt = ? "
                "AND call = 'recharge'",
                [utc_now(), outcome, http_status, message, trxid, attempt],
            )
            changes = dict(fields or {})
            if message is not None:
                changes["message"] = message
            if new_state is not None:
                self._transition(trxid, new_state, outcome, changes)
            elif changes:
                self._update(trxid, changes)

    def attempts(self, trxid: str) -> list[dict[str, Any]]:
        """Return every attempt of a transaction, oldest first."""
        cursor = self.conn.execute(
            "SELECT * FROM attempts WHERE trxid = ? ORDER BY id", [trxid]
        )
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def events(self, trxid: str | None = None) -> list[dict[str, Any]]:
        """Return recorded state changes, of one trxid if given."""
        if trxid is None:
            return list(self.db["events"].rows_where(order_by="id"))
        return list(self.db["events"].rows_where("trxid = ?", [trxid], order_by="id"))


_TRANSACTION_COLUMNS = frozenset(Transaction.__dataclass_fields__)


def _check_request_hash(current: Transaction, request_hash: str) -> None:
    # The body for a trxid must never change between attempts: a different
    # body under the same trxid could be charged as a second recharge.
    if current.request_hash is not None and current.request_hash != request_hash:
        raise JournalError(
            f"The request for {current.trxid} differs from its first attempt; "
            "refusing to send it. The journal or the plan options changed."
        )


def _encode_transaction(tx: Mapping[str, Any], now: str) -> dict[str, Any]:
    row = dict(tx)
    row["state"] = State(row["state"]).value
    row.setdefault("state_at", now)
    for name in ("warnings", "notes"):
        row[name] = json.dumps(list(row.get(name, ())))
    row["raw"] = json.dumps(dict(row.get("raw", {})), ensure_ascii=False)
    if State(row["state"]) in FINAL_STATES:
        row.setdefault("final_at", now)
    return row


def _create_private_file(path: Path) -> None:
    # Create the file before SQLite does, so that it never exists with a wider
    # mode; SQLite gives its -wal and -shm files the same mode.
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(descriptor)
