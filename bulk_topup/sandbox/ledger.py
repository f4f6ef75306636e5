"""The sandbox's ledger: balances, charges and every request received.

The ledger lives in SQLite, in memory or in a state file (WAL mode) so that it
outlives a restart or a kill of the process. Each request is one transaction,
and the caller commits it before writing the response, so a charge is stored
before anyone can learn of it.

A charge's status is computed from its stored times rather than kept up to
date, so it moves on while the server is down: ``Processing`` until
``settles_at``, then its drawn outcome. A ``Cancel`` refunds its amount the
first time the ledger is used after ``settles_at``. Money is stored in poisha
as integers.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bulk_topup.errors import ConfigError

PROCESSING = "Processing"
SUCCESS = "Success"
CANCEL = "Cancel"
MAIN_PURSE = "main"
DRIVE_PURSE = "drive"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE account (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    balance_poisha INTEGER NOT NULL,
    drive_balance_poisha INTEGER NOT NULL
);
CREATE TABLE charges (
    id INTEGER PRIMARY KEY,
    trxid TEXT NOT NULL,
    kind TEXT NOT NULL,
    number TEXT NOT NULL,
    operator TEXT NOT NULL,
    type TEXT,
    amount TEXT NOT NULL,
    amount_poisha INTEGER NOT NULL,
    package_id TEXT,
    bill_number TEXT,
    month TEXT,
    note TEXT NOT NULL,
    purse TEXT NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    charged_at REAL NOT NULL,
    settles_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    refunded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX charges_by_trxid ON charges (trxid, id);
CREATE INDEX charges_refund_due ON charges (settles_at)
    WHERE outcome = 'Cancel' AND refunded = 0;
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    action TEXT,
    trxid TEXT,
    body_sha256 TEXT NOT NULL,
    draw_key TEXT
);
CREATE INDEX requests_by_draw_key ON requests (draw_key)
    WHERE draw_key IS NOT NULL;
"""

_CHARGE_COLUMNS = (
    "trxid, kind, number, operator, type, amount, amount_poisha, package_id, "
    "bill_number, month, note, purse, outcome, message, charged_at, settles_at, "
    "visible_at"
)


@dataclass(frozen=True)
class Charge:
    """One charge of a recharge or a bill; times are Unix seconds.

    ``outcome`` is the final status drawn when it was charged, reached at
    ``settles_at``. Status queries do not see the charge before
    ``visible_at``. ``amount`` is the exact text: whole Taka for a recharge,
    Taka with two decimals for a bill.
    """

    trxid: str
    kind: str
    number: str
    operator: str
    type: str | None
    amount: str
    amount_poisha: int
    package_id: str | None
    bill_number: str | None
    month: str | None
    note: str
    purse: str
    outcome: str
    message: str
    charged_at: float
    settles_at: float
    visible_at: float

    def status_at(self, now: float) -> str:
        """Return the status at time now: Processing, then the outcome."""
        return PROCESSING if now < self.settles_at else self.outcome

    def to_json(self, now: float) -> dict[str, object]:
        """Return the entry that ``GET /sandbox/ledger`` lists for the charge."""
        amount: object = int(self.amount) if self.kind == "recharge" else self.amount
        return {
            "trxid": self.trxid,
            "kind": self.kind,
            "number": self.number,
            "operator": self.operator,
            "type": self.type,
            "amount": amount,
            "package_id": self.package_id,
            "bill_number": self.bill_number,
            "month": self.month,
            "status": self.status_at(now),
            "charged_at": format_time(self.charged_at),
        }


@dataclass(frozen=True)
class RequestEntry:
    """One request received; ``draw_key`` groups recharge and bill attempts."""

    at: float
    method: str
    path: str
    action: str | None
    trxid: str | None
    body_sha256: str
    draw_key: str | None = None

    def to_json(self) -> dict[str, object]:
        """Return the entry that ``GET /sandbox/requests`` lists."""
        return {
            "at": format_time(self.at),
            "method": self.method,
            "path": self.path,
            "action": self.action,
            "trxid": self.trxid,
            "body_sha256": self.body_sha256,
        }


def format_time(timestamp: float) -> str:
    """Return Unix seconds as ISO 8601 in UTC with its offset."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


def taka_to_poisha(taka: int | Decimal) -> int:
    """Return an amount of Taka in poisha; the caller ensures two decimals."""
    return int(Decimal(taka) * 100)


def poisha_to_taka(poisha: int) -> Decimal:
    """Return an amount of poisha as Taka, exact."""
    return Decimal(poisha).scaleb(-2)


class Ledger:
    """Balances, charges and requests in one SQLite database.

    Every method except ``transaction`` expects to run inside a transaction,
    on the thread that opened the ledger.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    @classmethod
    def open(cls, path: Path | None, *, balance: int, drive_balance: int) -> Ledger:
        """Open the state file at path (or memory), creating it if needed.

        The balances apply only to a new ledger: a state file keeps its own.
        Raises ConfigError when path is not a sandbox ledger.
        """
        connection = _connect(path)
        try:
            _prepare_schema(connection, path)
        except ConfigError:
            connection.close()
            raise
        except sqlite3.DatabaseError as error:
            connection.close()
            raise ConfigError(
                f"Cannot use {path} as the sandbox ledger: {error}. "
                "Choose another --state path."
            ) from error
        ledger = cls(connection)
        with ledger.transaction():
            connection.execute(
                "INSERT OR IGNORE INTO account VALUES (1, ?, ?)",
                (taka_to_poisha(balance), taka_to_poisha(drive_balance)),
            )

        return ledger

    def close(self) -> None:
        """Close the database."""
        self._connection.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block as one write transaction, rolled back on error."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")

    def record_request(self, entry: RequestEntry) -> None:
        """Store a request received."""
        self._connection.execute(
            "INSERT INTO requests (at, method, path, action, trxid, body_sha256,"
            " draw_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.at,
                entry.method,
                entry.path,
                entry.action,
                entry.trxid,
                entry.body_sha256,
                entry.draw_key,
            ),
        )

    def count_draw_key(self, draw_key: str) -> int:
        """Return how many stored requests carry this draw key."""
        row = self._connection.execute(
            "SELECT count(*) FROM requests WHERE draw_key = ?", (draw_key,)
        ).fetchone()
        return int(row[0])

    def first_charge(self, trxid: str) -> Charge | None:
        """Return the earliest charge of a trxid, or None if it was never charged."""
        row = self._connection.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE trxid = ?"
            " ORDER BY id LIMIT 1",
            (trxid,),
        ).fetchone()
        return None if row is None else Charge(*row)

    def add_charge(self, charge: Charge, now: float) -> bool:
        """Debit the charge's purse and store it; return False if it is short."""
        self._refund_due_cancels(now)
        column = _balance_column(charge.purse)
        row = self._connection.execute(f"SELECT {column} FROM account").fetchone()
        if row[0] < charge.amount_poisha:
            return False
        self._connection.execute(
            f"UPDATE account SET {column} = {column} - ?", (charge.amount_poisha,)
        )
        placeholders = ", ".join("?" * len(_CHARGE_COLUMNS.split(",")))
        self._connection.execute(
            f"INSERT INTO charges ({_CHARGE_COLUMNS}) VALUES ({placeholders})",
            (
                charge.trxid,
                charge.kind,
                charge.number,
                charge.operator,
                charge.type,
                charge.amount,
                charge.amount_poisha,
                charge.package_id,
                charge.bill_number,
                charge.month,
                charge.note,
                charge.purse,
                charge.outcome,
                charge.message,
                charge.charged_at,
                charge.settles_at,
                charge.visible_at,
            ),
        )

        return True

    def status(self, trxid: str, now: float) -> str | None:
        """Return the trxid's status, or None while status must not see it."""
        charge = self.first_charge(trxid)
        if charge is None or now < charge.visible_at:
            return None

        return charge.status_at(now)

    def balances(self, now: float) -> tuple[Decimal, Decimal]:
        """Return the main and drive balances in Taka, after due refunds."""
        self._refund_due_cancels(now)
        row = self._connection.execute(
            "SELECT balance_poisha, drive_balance_poisha FROM account"
        ).fetchone()
        return poisha_to_taka(row[0]), poisha_to_taka(row[1])

    def set_balances(self, balance: Decimal | None, drive: Decimal | None) -> None:
        """Set the main and drive balances in Taka; None keeps one as it is."""
        if balance is not None:
            self._connection.execute(
                "UPDATE account SET balance_poisha = ?", (taka_to_poisha(balance),)
            )
        if drive is not None:
            self._connection.execute(
                "UPDATE account SET drive_balance_poisha = ?",
                (taka_to_poisha(drive),),
            )

    def charges(self) -> list[Charge]:
        """Return every charge in the order it was made."""
        rows = self._connection.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM charges ORDER BY id"
        )
        return [Charge(*row) for row in rows]

    def unsettled_charges(self, now: float) -> list[Charge]:
        """Return the charges that are still Processing at time now."""
        rows = self._connection.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE settles_at > ? ORDER BY id",
            (now,),
        )
        return [Charge(*row) for row in rows]

    def requests(self) -> list[RequestEntry]:
        """Return every request received, oldest first."""
        rows = self._connection.execute(
            "SELECT at, method, path, action, trxid, body_sha256, draw_key"
            " FROM requests ORDER BY id"
        )
        return [RequestEntry(*row) for row in rows]

    def count_requests(self) -> dict[str, int]:
        """Return how many requests each path received."""
        rows = self._connection.execute(
            "SELECT path, count(*) FROM requests GROUP BY path ORDER BY path"
        )
        return {path: count for path, count in rows}

    def _refund_due_cancels(self, now: float) -> None:
        due = self._connection.execute(
            "SELECT id, purse, amount_poisha FROM charges"
            " WHERE outcome = 'Cancel' AND refunded = 0 AND settles_at <= ?",
            (now,),
        ).fetchall()
        for charge_id, purse, amount_poisha in due:
            column = _balance_column(purse)
            self._connection.execute(
                f"UPDATE account SET {column} = {column} + ?", (amount_poisha,)
            )
            self._connection.execute(
                "UPDATE charges SET refunded = 1 WHERE id = ?", (charge_id,)
            )


def _balance_column(purse: str) -> str:
    if purse == DRIVE_PURSE:
        return "drive_balance_poisha"
    if purse == MAIN_PURSE:
        return "balance_poisha"
    raise ValueError(f"unknown purse {purse!r}")


def _connect(path: Path | None) -> sqlite3.Connection:
    if path is None:
        return sqlite3.connect(":memory:", isolation_level=None)
    try:
        return _connect_file(path)
    except (OSError, sqlite3.DatabaseError) as error:
        raise ConfigError(
            f"Cannot use {path} as the sandbox ledger: {error}. "
            "Choose another --state path."
        ) from error


def _connect_file(path: Path) -> sqlite3.Connection:
    if not path.exists():
        # The ledger contains customers' phone numbers, so only its owner reads it.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    # NORMAL loses no committed transaction when the process is killed, only on
    # a power cut, and it keeps each commit far below a millisecond.
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA busy_timeout = 5000")

    return connection


def _prepare_schema(connection: sqlite3.Connection, path: Path | None) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if version != 0 or tables:
        raise ConfigError(
            f"{path} is not a sandbox ledger of this version (user_version "
            f"{version}): choose another --state path."
        )
    connection.executescript(_SCHEMA)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
