"""Frozen data types that the pipeline's stages pass to each other.

Reading produces a ``SourceTable``. Validation turns it into a ``Validation``
of ``ValidRow``, ``RejectedRow`` and ``SkippedRow`` values. Planning journals
one transaction per row or part, and the journal gives each a ``State``.
Money is in whole Taka as ``int`` for recharges and ``Decimal`` for bills.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

OPERATORS = ("GP", "RB", "AT", "BL", "TT", "SK", "BT")
TYPES = ("prepaid", "postpaid")
API_MINIMUM_AMOUNT = 9


class CellKind(enum.Enum):
    """The kind of value a spreadsheet stored in a cell; CSV cells are ``TEXT``."""

    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"
    ERROR = "error"
    FORMULA_WITHOUT_VALUE = "formula_without_value"
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell as text, with the kind of value the file stored in it.

    ``text`` is the value's text as read: for a numeric spreadsheet cell it is
    the number's shortest exact form (``1711000001`` or ``50.5``), never a
    display format.
    """

    text: str
    kind: CellKind = CellKind.TEXT


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One physical record after the header, numbered as the user sees it."""

    source_row: int
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class SourceTable:
    """Every record of a batch file as text cells, with how the file was read."""

    path: str
    format: str
    header: tuple[str, ...]
    records: tuple[SourceRecord, ...]
    header_row: int
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    decimal_comma: bool = False


@dataclass(frozen=True, slots=True)
class Problem:
    """One failed check on one cell: the row as the user sees it, and the fix."""

    source_row: int
    column: str
    value: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ValidRow:
    """A row that can be sent, normalised, with every change it went through.

    ``duplicate_of`` is the source row of an earlier equal row: such a row is
    reported as ``duplicate_row`` by ``validate`` and held as ``duplicate`` by
    ``run`` unless duplicates are allowed. ``parts`` is the amount split by
    ``--split-above``, or ``(amount,)``.
    """

    source_row: int
    number: str
    operator: str
    type: str
    amount: int
    package_id: str | None = None
    reference: str | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, str] = field(default_factory=dict)
    duplicate_of: int | None = None
    parts: tuple[int, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, int, str]:
        """The five fields that make two rows the same recharge."""
        return (
            self.number,
            self.operator,
            self.type,
            self.amount,
            self.package_id or "",
        )


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that fails one or more checks; ``problems`` gives where and why."""

    source_row: int
    problems: tuple[Problem, ...]
    raw: Mapping[str, str] = field(default_factory=dict)
    duplicate_of: int | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reason codes of every failed check, in column order."""
        return tuple(problem.reason for problem in self.problems)


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row that carries no data: ``blank_row`` or ``repeated_header``."""

    source_row: int
    reason: str


@dataclass(frozen=True, slots=True)
class BillRow:
    """A valid bill-payment row; ``amount`` may carry poisha.

    ``duplicate_of``, ``notes``, ``extra`` and ``raw`` mean what they mean on
    ``ValidRow``.
    """

    source_row: int
    bill_operator: str
    bill_number: str
    amount: Decimal
    mobile_number: str
    month: str
    note: str | None = None
    notes: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, str] = field(default_factory=dict)
    duplicate_of: int | None = None

    @property
    def key(self) -> tuple[str, str, Decimal, str]:
        """The four fields that make two rows the same bill payment."""
        return (self.bill_operator, self.bill_number, self.amount, self.month)


BatchRow = ValidRow | RejectedRow | SkippedRow | BillRow


@dataclass(frozen=True)
class AmountPolicy:
    """Amount limits and splitting, in whole Taka; stored with each batch."""

    minimum: int = API_MINIMUM_AMOUNT
    operator_minimums: Mapping[str, int] = field(default_factory=dict)
    operator_maximums: Mapping[str, int] = field(default_factory=dict)
    split_above: int | None = None

    def minimum_for(self, operator: str) -> int:
        """Return the smallest amount allowed for an operator."""
        return max(self.minimum, self.operator_minimums.get(operator, 0))

    def maximum_for(self, operator: str) -> int | None:
        """Return the largest amount allowed for an operator, if any."""
        return self.operator_maximums.get(operator)


@dataclass(frozen=True)
class Validation:
    """A validated batch: how its file was read, and every row in file order."""

    table: SourceTable
    rows: tuple[BatchRow, ...]
    kind: str = "recharge"

    @property
    def valid_rows(self) -> list[ValidRow]:
        """Return the rows that can be planned, duplicates included."""
        return [row for row in self.rows if isinstance(row, ValidRow)]

    @property
    def rejected_rows(self) -> list[RejectedRow]:
        """Return the rows with at least one failed check."""
        return [row for row in self.rows if isinstance(row, RejectedRow)]


class State(enum.StrEnum):
    """The state of a transaction in the journal."""

    PLANNED = "planned"
    SENDING = "sending"
    PROCESSING = "processing"
    UNKNOWN = "unknown"
    REVIEW = "review"
    HELD = "held"
    SUCCESS = "success"
    CANCELLED = "cancelled"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    REPEAT = "repeat"

    @property
    def is_final(self) -> bool:
        """Whether no transition leaves this state."""
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        State.SUCCESS,
        State.CANCELLED,
        State.FAILED,
        State.SUPERSEDED,
        State.INVALID,
        State.DUPLICATE,
        State.REPEAT,
    }
)
# States that count as "in flight" for the repeat guard and keep a run open.
OPEN_STATES = frozenset({State.SENDING, State.PROCESSING, State.UNKNOWN, State.REVIEW})
UNSENT_STATES = frozenset({State.PLANNED, State.HELD})

# Every legal transition. The journal refuses any other one, so that a bug
# which would pay a row twice or resurrect a final row fails loudly.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.PLANNED: frozenset(
        {State.SENDING, State.HELD, State.SUPERSEDED, State.REPEAT}
    ),
    State.HELD: frozenset({State.SENDING, State.SUPERSEDED, State.REPEAT}),
    State.SENDING: frozenset(
        {State.PROCESSING, State.UNKNOWN, State.FAILED, State.SUCCESS}
    ),
    State.PROCESSING: frozenset({State.PROCESSING, State.SUCCESS, State.CANCELLED}),
    State.UNKNOWN: frozenset(
        {
            State.PROCESSING,
            State.SUCCESS,
            State.CANCELLED,
            State.REVIEW,
            State.SENDING,
        }
    ),
    State.REVIEW: frozenset({State.SUCCESS, State.CANCELLED, State.FAILED}),
}


def is_legal_transition(old: State, new: State) -> bool:
    """Return whether the journal may move a transaction from old to new."""
    return new in TRANSITIONS.get(old, frozenset())
