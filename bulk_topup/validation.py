"""Validating a batch: every row normalised, checked and explained.

``validate_table`` turns a ``SourceTable`` into a ``Validation`` whose rows
are, in file order, ``ValidRow`` (``BillRow`` in a bill batch),
``RejectedRow`` or ``SkippedRow``. Row problems are data (``Problem``), never
exceptions; only a table without its required columns raises ``InputError``.

Rows of a CSV that are already clean (a plain ``01[3-9]`` number, an exact
operator code or none, ``prepaid``/``postpaid`` or none, digits for the
amount) are recognised by a vectorised polars pass. They skip the per-cell
normalisers, and that keeps a million-row file to seconds.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from . import columns
from .models import (
    OPERATORS,
    AmountPolicy,
    BatchRow,
    BillRow,
    Cell,
    CellKind,
    Problem,
    RejectedRow,
    SkippedRow,
    SourceRecord,
    SourceTable,
    Validation,
    ValidRow,
)
from .normalise import (
    DEFAULT_BILL_OPERATORS,
    PREFIX_OWNERS,
    Amount,
    clean_text,
    is_empty,
    kind_problem,
    normalise_bill_operator,
    normalise_month,
    normalise_number,
    normalise_operator,
    normalise_type,
    parse_amount,
    parse_bill_amount,
    whole_taka,
)
from .reading import FREEZE_MIN_RECORDS, paused_gc

EMPTY = Cell("", CellKind.EMPTY)
# One row split by --split-above never becomes more transactions than this.
MAX_SPLIT_PARTS = 1000
# Below this many rows the vectorised pass costs more than it saves.
FAST_PATH_MIN_ROWS = 2000
RECHARGE_FIELDS = ("number", "operator", "type", "amount", "package_id", "reference")
BILL_FIELDS = ("billOperator", "billNumber", "billAmount", "mobileNumber", "monthName")

FIXES = {
    "missing_number": "the number is empty; write the 11-digit mobile number, "
    "like 01712345678",
    "invalid_number": "`{value}` is not a Bangladesh mobile number; write 11 "
    "digits starting with 013 to 019, like 01712345678",
    "number_scientific_notation": "`{value}` is in scientific notation, which "
    "has lost digits; format the column as Text and type the numbers again",
    "unknown_operator": "`{value}` is not an operator; write GP, RB, AT, BL, "
    "TT, SK or BT, or leave it empty to infer it from the number",
    "invalid_type": "`{value}` is not a connection type; write prepaid or postpaid",
    "skitto_requires_prepaid": "Skitto numbers can only be recharged as prepaid; "
    "change the type to prepaid",
    "missing_amount": "the amount is empty; write the amount in whole Taka, like 50",
    "invalid_amount": "`{value}` is not an amount; write it in digits, like 50",
    "amount_not_whole_taka": "`{value}` is not a whole number of Taka; round it "
    "to whole Taka",
    "amount_below_minimum": "`{value}` is below the minimum of {minimum}; raise "
    "it to at least {minimum}",
    "amount_above_maximum": "`{value}` is above the maximum of {maximum} Taka; "
    "lower it or split it with --split-above",
    "amount_split_below_minimum": "`{value}` split above {split} Taka gives "
    "parts of {part} Taka, below the minimum of {minimum}; raise --split-above",
    "amount_is_date": "the cell holds a date ({value}), not an amount; format "
    "the column as Number and type the amount again",
    "formula_error": "the formula in this cell gives {value}; fix the formula "
    "or type the value",
    "formula_without_cached_value": "the formula `{value}` has no saved result; "
    "open the file in Excel and save it again, or type the value",
    "column_count_mismatch": "the row has {count} fields but the header has "
    '{width}; quote values that contain the delimiter, like "1,000"',
    "duplicate_reference": "reference `{value}` is also used by row {other}; "
    "give each row its own reference",
    "duplicate_row": "the same recharge as row {other}; it is held and not sent "
    "unless --allow-duplicates is given",
    "invalid_bill_operator": "`{value}` is not a bill operator; write one of {allowed}",
    "invalid_month": "`{value}` is not a month; write its name, like January",
}


@dataclass(frozen=True)
class Layout:
    """Positions of the batch columns in a table's records."""

    header: tuple[str, ...]
    positions: Mapping[str, int]
    extra: tuple[int, ...]

    def cell(self, record: SourceRecord, name: str) -> Cell:
        """Return a record's cell of a canonical column, empty when absent."""
        position = self.positions.get(name)
        if position is None or position >= len(record.cells):
            return EMPTY
        return record.cells[position]

    def column(self, name: str) -> str:
        """Return a canonical column's name as the file writes it."""
        position = self.positions.get(name)
        return name if position is None else self.header[position]


def validate_table(
    table: SourceTable,
    policy: AmountPolicy | None = None,
    *,
    bill_operators: Iterable[str] = DEFAULT_BILL_OPERATORS,
) -> Validation:
    """Normalise and check every row of a table; find duplicates among them."""
    policy = policy or AmountPolicy()
    match = columns.match_header(table.header)
    if not match.is_complete:
        raise columns.header_error(Path(table.path).name, match)
    fields = BILL_FIELDS + ("note",) if match.kind == "bill" else RECHARGE_FIELDS
    layout = _layout(table.header, match, fields)
    with paused_gc(freeze=len(table.records) >= FREEZE_MIN_RECORDS):
        if match.kind == "bill":
            allowed = frozenset(code.upper() for code in bill_operators)
            bills = [
                _check_bill(record, layout, allowed, table) for record in table.records
            ]
            return Validation(table, tuple(_mark_bill_duplicates(bills)), kind="bill")
        checked = _check_recharges(table, layout, policy)
        rows = _mark_recharge_duplicates(checked, layout)
    return Validation(table, tuple(rows))


def _layout(
    header: Sequence[str], match: columns.HeaderMatch, fields: Sequence[str]
) -> Layout:
    positions = {name: match.columns[name] for name in fields if name in match.columns}
    used = set(positions.values())
    extra = tuple(index for index in range(len(header)) if index not in used)
    return Layout(tuple(header), positions, extra)


# --- rows shared by both kinds -------------------------------------------------


def _skip_reason(record: SourceRecord, layout: Layout) -> str | None:
    if all(not cell.text.strip() for cell in record.cells):
        return "blank_row"
    texts = [cell.text for cell in record.cells]
    if len(texts) >= len(layout.header) and all(
        columns.header_key(text) == columns.header_key(name)
        for text, name in zip(texts, layout.header, strict=False)
    ):
        return "repeated_header"
    return None


class RowCells(Mapping[str, str]):
    """A record's original cell texts by header name, as a read-only view.

    A view instead of a dict per row saves about 300 bytes a row, which
    matters for a million-row batch. Fields past the header are named
    ``column_<n>``, counting from 1. ``dict(view)`` gives a plain dict.
    """

    __slots__ = ("_positions", "_cells")

    def __init__(self, positions: Mapping[str, int], cells: tuple[Cell, ...]) -> None:
        self._positions = positions
        self._cells = cells

    def __getitem__(self, name: str) -> str:
        position = self._positions[name]
        return self._cells[position].text if position < len(self._cells) else ""

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)

    def __repr__(self) -> str:
        return repr(dict(self))


def _raw(record: SourceRecord, header: tuple[str, ...]) -> RowCells:
    return RowCells(_positions(header, len(record.cells)), record.cells)


@functools.lru_cache(maxsize=64)
def _positions(header: tuple[str, ...], width: int) -> Mapping[str, int]:
    positions = {name: index for index, name in enumerate(header)}
    for index in range(len(header), width):
        positions[f"column_{index + 1}"] = index
    return positions


def _extra(record: SourceRecord, layout: Layout) -> dict[str, str]:
    cells = record.cells
    return {
        layout.header[index]: cells[index].text
        for index in layout.extra
        if index < len(cells)
    }


def _overflow(record: SourceRecord, layout: Layout) -> Problem | None:
    """Return a problem when a record has more fields than the header.

    Such a row is never truncated, because a shifted value would be read as
    the wrong column (``10,500`` unquoted as an amount of 10). Spreadsheet
    rows count up to their last non-empty cell.
    """
    width = len(layout.header)
    if len(record.cells) <= width:
        return None
    value = ", ".join(cell.text for cell in record.cells[width:])
    message = _fix("column_count_mismatch", value, count=len(record.cells), width=width)
    column = f"column_{width + 1}"
    return Problem(record.source_row, column, value, "column_count_mismatch", message)


def _fix(reason: str, value: str, **context: object) -> str:
    template = FIXES.get(reason, reason.replace("_", " ") + " `{value}`")
    return template.format_map(_Context(context, value=value))


class _Context(dict[str, object]):
    """Message values, where a value that the caller left out reads "the limit"."""

    def __missing__(self, key: str) -> str:
        return "the limit"


def _problem(
    record: SourceRecord, layout: Layout, name: str, reason: str, **context: object
) -> Problem:
    value = layout.cell(record, name).text
    return Problem(
        record.source_row,
        layout.column(name),
        value,
        reason,
        _fix(reason, value, **context),
    )


def _change_note(column: str, before: str, after: str | None) -> str | None:
    if after == before or (after is None and not before.strip()):
        return None
    shown = "none" if after is None else f"`{after}`"
    if not before.strip():
        return f"{column}: empty, sent {shown}"
    return f"{column}: was `{before}`, sent {shown}"


# --- recharge rows -----------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    """A row's verdict before duplicates are looked for."""

    row: BatchRow
    reference: str | None = None


def _check_recharges(
    table: SourceTable, layout: Layout, policy: AmountPolicy
) -> list[_Checked]:
    fast = _FastPath.build(table, layout, policy)
    if fast is None:
        return [
            _check_recharge(record, layout, policy, table.decimal_comma)
            for record in table.records
        ]
    checked = fast.rows(table.records)
    for index, record in enumerate(table.records):
        if checked[index] is None:
            checked[index] = _check_recharge(
                record, layout, policy, table.decimal_comma
            )
    return checked  # type: ignore[return-value]


def _check_recharge(
    record: SourceRecord, layout: Layout, policy: AmountPolicy, decimal_comma: bool
) -> _Checked:
    skipped = _skip_reason(record, layout)
    if skipped:
        return _Checked(SkippedRow(record.source_row, skipped))
    raw = _raw(record, layout.header)
    overflow = _overflow(record, layout)
    if overflow:
        return _Checked(RejectedRow(record.source_row, (overflow,), raw))
    return _RechargeCheck(record, layout, policy, decimal_comma, raw).run()


class _RechargeCheck:
    """The checks of one recharge row, in column order."""

    def __init__(
        self,
        record: SourceRecord,
        layout: Layout,
        policy: AmountPolicy,
        decimal_comma: bool,
        raw: RowCells,
    ) -> None:
        self.record = record
        self.layout = layout
        self.policy = policy
        self.decimal_comma = decimal_comma
        self.raw = raw
        self.problems: list[Problem] = []
        self.notes: list[str] = []

    def fail(self, name: str, reason: str, **context: object) -> None:
        self.problems.append(
            _problem(self.record, self.layout, name, reason, **context)
        )

    def note(self, name: str, after: str | None) -> None:
        if name not in self.layout.positions:
            return
        before = self.layout.cell(self.record, name).text
        note = _change_note(self.layout.column(name), before, after)
        if note:
            self.notes.append(note)

    def run(self) -> _Checked:
        cell = self.layout.cell
        number = normalise_number(cell(self.record, "number"))
        if number.reason:
            self.fail("number", number.reason)
        operator = normalise_operator(cell(self.record, "operator"), number.value)
        if operator.reason:
            self.fail("operator", operator.reason)
        kind = normalise_type(cell(self.record, "type"))
        if kind.reason:
            self.fail("type", kind.reason)
        elif operator.value == "SK" and kind.value == "postpaid":
            self.fail("type", "skitto_requires_prepaid")

        package = self.optional_text("package_id")
        amount = self.amount(operator.value, package)
        reference = self.optional_text("reference")
        if self.problems or not (number.value and operator.value and kind.value):
            rejected = RejectedRow(
                self.record.source_row, tuple(self.problems), self.raw
            )
            return _Checked(rejected, reference)

        assert amount is not None
        self.note("number", number.value)
        self.note_operator(operator.value, operator.warning)
        self.note("type", kind.value)
        self.note("amount", str(amount[0]))
        self.note("package_id", package)
        self.note("reference", reference)
        row = ValidRow(
            source_row=self.record.source_row,
            number=number.value,
            operator=operator.value,
            type=kind.value,
            amount=amount[0],
            package_id=package,
            reference=reference,
            warnings=tuple(w for w in (operator.warning, kind.warning) if w),
            notes=tuple(self.notes),
            extra=_extra(self.record, self.layout),
            raw=self.raw,
            parts=amount[1],
        )
        return _Checked(row, reference)

    def note_operator(self, value: str, warning: str | None) -> None:
        if warning == "operator_inferred":
            column = self.layout.column("operator")
            self.notes.append(f"{column}: empty, inferred `{value}` from the prefix")
        else:
            self.note("operator", value)

    def optional_text(self, name: str) -> str | None:
        cell = self.layout.cell(self.record, name)
        problem = kind_problem(cell)
        if problem:
            self.fail(name, problem)
            return None
        text = clean_text(cell.text)
        return None if is_empty(text) else text

    def amount(
        self, operator: str | None, package: str | None
    ) -> tuple[int, tuple[int, ...]] | None:
        cell = self.layout.cell(self.record, "amount")
        parsed = parse_amount(cell, self.decimal_comma)
        result = _recharge_amount(parsed, operator, package, self.policy)
        if result.reason:
            self.fail("amount", result.reason, **result.context)
            return None
        return result.amount, result.parts


@dataclass(frozen=True)
class _AmountResult:
    """An amount in whole Taka with its parts, or a reason and message context."""

    amount: int = 0
    parts: tuple[int, ...] = ()
    reason: str | None = None
    context: Mapping[str, object] = field(default_factory=dict)


def _recharge_amount(
    parsed: Amount, operator: str | None, package: str | None, policy: AmountPolicy
) -> _AmountResult:
    """Check an amount against the policy and split it above ``split_above``."""
    if parsed.value is None:
        return _AmountResult(reason=str(parsed.reason))
    amount = whole_taka(parsed.value)
    if amount is None:
        return _AmountResult(reason="amount_not_whole_taka")
    minimum = policy.minimum_for(operator or "")
    context: dict[str, object]
    if amount < minimum:
        context = {"minimum": f"{minimum} Taka"}
        return _AmountResult(reason="amount_below_minimum", context=context)
    split = policy.split_above
    parts: tuple[int, ...] = (amount,)
    if split and amount > split and not package:
        count = -(-amount // split)
        if count > MAX_SPLIT_PARTS:
            context = {"maximum": split * MAX_SPLIT_PARTS}
            return _AmountResult(reason="amount_above_maximum", context=context)
        parts = split_amount(amount, count)
        if parts[-1] < minimum:
            context = {"split": split, "part": parts[-1], "minimum": minimum}
            return _AmountResult(reason="amount_split_below_minimum", context=context)
    maximum = policy.maximum_for(operator or "")
    # With splitting, each transaction is one part, so the parts are checked.
    if maximum is not None and parts[0] > maximum:
        context = {"maximum": maximum}
        return _AmountResult(reason="amount_above_maximum", context=context)
    return _AmountResult(amount, parts)


def split_amount(amount: int, count: int) -> tuple[int, ...]:
    """Split an amount into count parts differing by at most 1, larger first."""
    share, remainder = divmod(amount, count)
    return (share + 1,) * remainder + (share,) * (count - remainder)


# --- the vectorised fast path ------------------------------------------------


@dataclass(frozen=True)
class _FastPath:
    """The columns of a CSV as lists, and which rows need no normalisation.

    A clean row has no fields past the header, a plain 01[3-9] number, an
    operator that owns the prefix (or none, to infer), prepaid/postpaid (or
    none), a digits-only amount within the policy, and plain ASCII package and
    reference values. Everything else goes through the per-cell rules.
    """

    layout: Layout
    texts: Mapping[str, list[str]]
    clean: list[bool]

    @classmethod
    def build(
        cls, table: SourceTable, layout: Layout, policy: AmountPolicy
    ) -> _FastPath | None:
        """Mark the clean rows of a CSV, or return None to check every row."""
        records = table.records
        if table.format != "csv" or len(records) < FAST_PATH_MIN_ROWS:
            return None
        texts = {name: _texts(records, layout, name) for name in RECHARGE_FIELDS}
        fits = [len(record.cells) <= len(layout.header) for record in records]
        frame = pl.DataFrame(
            texts | {"fits": fits},
            schema={**dict.fromkeys(RECHARGE_FIELDS, pl.String), "fits": pl.Boolean},
        )
        clean = frame.select(_clean_expression(policy).fill_null(False)).to_series()
        return cls(layout, texts, clean.to_list())

    def rows(self, records: Sequence[SourceRecord]) -> list[_Checked | None]:
        """Build the valid rows of the clean records, None for the others."""
        texts, layout = self.texts, self.layout
        header = layout.header
        columns = zip(
            self.clean,
            records,
            texts["number"],
            texts["operator"],
            texts["type"],
            texts["amount"],
            texts["package_id"],
            texts["reference"],
            strict=True,
        )
        built: list[_Checked | None] = []
        for (
            clean,
            record,
            number,
            operator,
            kind,
            amount,
            package,
            reference,
        ) in columns:
            if not clean:
                built.append(None)
                continue
            warnings: tuple[str, ...] = ()
            notes: tuple[str, ...] = ()
            if not operator or not kind:
                operator, kind, warnings, notes = _fill_defaults(
                    layout, number, operator, kind
                )
            value = int(amount)
            row = ValidRow(
                source_row=record.source_row,
                number=number,
                operator=operator,
                type=kind,
                amount=value,
                package_id=package or None,
                reference=reference or None,
                warnings=warnings,
                notes=notes,
                extra=_extra(record, layout) if layout.extra else {},
                raw=_raw(record, header),
                parts=(value,),
            )
            built.append(_Checked(row, row.reference))
        return built


def _fill_defaults(
    layout: Layout, number: str, operator: str, kind: str
) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    warnings, notes = [], []
    if not operator:
        operator = PREFIX_OWNERS[number[:3]]
        warnings.append("operator_inferred")
        column = layout.column("operator")
        notes.append(f"{column}: empty, inferred `{operator}` from the prefix")
    if not kind:
        kind = "prepaid"
        warnings.append("type_defaulted")
        notes.append(f"{layout.column('type')}: empty, sent `prepaid`")
    return operator, kind, tuple(warnings), tuple(notes)


def _texts(records: Sequence[SourceRecord], layout: Layout, name: str) -> list[str]:
    position = layout.positions.get(name)
    if position is None:
        return [""] * len(records)
    return [
        record.cells[position].text if position < len(record.cells) else ""
        for record in records
    ]


def _clean_expression(policy: AmountPolicy) -> pl.Expr:
    number, operator = pl.col("number"), pl.col("operator")
    kind, amount = pl.col("type"), pl.col("amount")
    prefix = number.str.slice(0, 3)
    owner = prefix.replace_strict(PREFIX_OWNERS, default=None)
    prepaid = (kind == "prepaid") | (kind == "")

    operator_ok = (
        (operator == "")
        | (operator == owner)
        | (operator == "BT")
        | ((operator == "SK") & prefix.is_in(["013", "017"]) & prepaid)
    )

    value = amount.cast(pl.Int64, strict=False)
    effective = pl.when(operator == "").then(owner).otherwise(operator)
    minimum = effective.replace_strict(
        {code: policy.minimum_for(code) for code in OPERATORS},
        default=policy.minimum,
        return_dtype=pl.Int64,
    )
    amount_ok = amount.str.contains(r"^[1-9][0-9]{0,14}$") & (value >= minimum)
    for code in OPERATORS:
        maximum = policy.maximum_for(code)
        if maximum is not None:
            amount_ok = amount_ok & ((effective != code) | (value <= maximum))
    if policy.split_above:
        amount_ok = amount_ok & (value <= policy.split_above)

    return (
        pl.col("fits")
        & number.str.contains(r"^01[3-9][0-9]{8}$")
        & operator_ok
        & (prepaid | (kind == "postpaid"))
        & amount_ok
        & _plain_text(pl.col("package_id"))
        & _plain_text(pl.col("reference"))
    )


def _plain_text(column: pl.Expr) -> pl.Expr:
    sentinel = column.str.to_lowercase().is_in(["na", "null", "none"])
    plain = column.str.contains(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    return (column == "") | (plain & ~sentinel)


# --- duplicates --------------------------------------------------------------


def _mark_recharge_duplicates(
    checked: Sequence[_Checked], layout: Layout
) -> list[BatchRow]:
    """Reject shared references, mark later equal rows, flag repeated numbers."""
    rows = _reject_shared_references(checked, layout)
    first: dict[tuple[str, str, str, int, str], ValidRow] = {}
    numbers: Counter[str] = Counter()
    for index, row in enumerate(rows):
        if not isinstance(row, ValidRow):
            continue
        key = row.key
        earlier = first.setdefault(key, row)
        if earlier is row or (earlier.reference and row.reference):
            numbers[row.number] += 1
        else:
            rows[index] = replace(row, duplicate_of=earlier.source_row)
    repeated = {number for number, count in numbers.items() if count > 1}
    if repeated:
        _warn_repeated_numbers(rows, repeated)
    return rows


def _reject_shared_references(
    checked: Sequence[_Checked], layout: Layout
) -> list[BatchRow]:
    first: dict[str, int] = {}
    shared: dict[str, list[int]] = {}
    for index, item in enumerate(checked):
        if item.reference and not isinstance(item.row, SkippedRow):
            earlier = first.setdefault(item.reference, index)
            if earlier != index:
                shared.setdefault(item.reference, [earlier]).append(index)
    rows = [item.row for item in checked]
    column = layout.column("reference")
    for reference, indices in shared.items():
        for index in indices:
            other = next(rows[i].source_row for i in indices if i != index)
            rows[index] = _with_problem(rows[index], column, reference, other)
    return rows


def _with_problem(row: BatchRow, column: str, reference: str, other: int) -> BatchRow:
    message = _fix("duplicate_reference", reference, other=other)
    problem = Problem(row.source_row, column, reference, "duplicate_reference", message)
    if isinstance(row, RejectedRow):
        return replace(row, problems=(*row.problems, problem))
    raw: Mapping[str, str] = row.raw if isinstance(row, ValidRow | BillRow) else {}
    return RejectedRow(row.source_row, (problem,), raw)


def _warn_repeated_numbers(rows: list[BatchRow], repeated: set[str]) -> None:
    for index, row in enumerate(rows):
        if (
            isinstance(row, ValidRow)
            and row.duplicate_of is None
            and row.number in repeated
        ):
            rows[index] = replace(row, warnings=(*row.warnings, "number_repeated"))


# --- bill rows ---------------------------------------------------------------


def _check_bill(
    record: SourceRecord, layout: Layout, allowed: frozenset[str], table: SourceTable
) -> BatchRow:
    skipped = _skip_reason(record, layout)
    if skipped:
        return SkippedRow(record.source_row, skipped)
    raw = _raw(record, layout.header)
    overflow = _overflow(record, layout)
    if overflow:
        return RejectedRow(record.source_row, (overflow,), raw)

    cell = layout.cell
    operator = normalise_bill_operator(cell(record, "billOperator"), allowed)
    bill_number = clean_text(cell(record, "billNumber").text)
    amount = parse_bill_amount(cell(record, "billAmount"), table.decimal_comma)
    mobile = normalise_number(cell(record, "mobileNumber"))
    month = normalise_month(cell(record, "monthName"))
    number_problem = kind_problem(cell(record, "billNumber"))
    if number_problem is None and is_empty(bill_number):
        number_problem = "missing_number"
    reasons = [
        ("billOperator", operator.reason),
        ("billNumber", number_problem),
        ("billAmount", amount.reason),
        ("mobileNumber", mobile.reason),
        ("monthName", month.reason),
    ]
    context = {"allowed": ", ".join(sorted(allowed)), "minimum": "0.01 Taka"}
    problems = tuple(
        _problem(record, layout, name, reason, **context)
        for name, reason in reasons
        if reason
    )
    if problems:
        return RejectedRow(record.source_row, problems, raw)

    assert operator.value and amount.value is not None
    assert mobile.value and month.value
    note = clean_text(cell(record, "note").text)
    return BillRow(
        source_row=record.source_row,
        bill_operator=operator.value,
        bill_number=bill_number,
        amount=amount.value,
        mobile_number=mobile.value,
        month=month.value,
        note=None if is_empty(note) else note,
        notes=_bill_notes(record, layout, mobile.value, month.value),
        extra=_extra(record, layout),
        raw=raw,
    )


def _bill_notes(
    record: SourceRecord, layout: Layout, mobile: str, month: str
) -> tuple[str, ...]:
    changes = [
        ("mobileNumber", mobile),
        ("monthName", month),
    ]
    notes = []
    for name, after in changes:
        note = _change_note(layout.column(name), layout.cell(record, name).text, after)
        if note:
            notes.append(note)
    return tuple(notes)


def _mark_bill_duplicates(rows: Sequence[BatchRow]) -> list[BatchRow]:
    first: dict[tuple[str, str, Decimal, str], int] = {}
    marked = list(rows)
    for index, row in enumerate(marked):
        if not isinstance(row, BillRow):
            continue
        earlier = first.setdefault(row.key, row.source_row)
        if earlier != row.source_row:
            marked[index] = replace(row, duplicate_of=earlier)
    return marked


# --- reporting ---------------------------------------------------------------


def is_duplicate(row: BatchRow) -> bool:
    """Return whether a row is a later copy of an equal row in the batch."""
    return isinstance(row, ValidRow | BillRow) and row.duplicate_of is not None


def describe_validation(validation: Validation) -> dict[str, Any]:
    """Return the ``validate --json`` document of a validated batch."""
    table = validation.table
    with paused_gc(freeze=False):
        rows = [_describe_row(row) for row in validation.rows]
    totals = Counter(row["status"] for row in rows)
    return {
        "file": table.path,
        "format": table.format,
        "encoding": table.encoding,
        "delimiter": table.delimiter,
        "sheet": table.sheet,
        "header_row": table.header_row,
        "kind": validation.kind,
        "rows": rows,
        "totals": {
            "valid": totals["valid"],
            "rejected": totals["rejected"],
            "skipped": totals["skipped"],
        },
    }


def _describe_row(row: BatchRow) -> dict[str, Any]:
    if isinstance(row, SkippedRow):
        return {"source_row": row.source_row, "status": "skipped", "reason": row.reason}
    if isinstance(row, RejectedRow):
        return _describe_rejected(row)
    if row.duplicate_of is not None:
        return {
            "source_row": row.source_row,
            "status": "rejected",
            "reasons": ["duplicate_row"],
            "duplicate_of": row.duplicate_of,
        }
    if isinstance(row, BillRow):
        return _describe_bill(row)
    described = {
        "source_row": row.source_row,
        "status": "valid",
        "number": row.number,
        "operator": row.operator,
        "type": row.type,
        "amount": row.amount,
        "package_id": row.package_id,
        "reference": row.reference,
        "warnings": list(row.warnings),
        "notes": list(row.notes),
        "extra": dict(row.extra),
    }
    if len(row.parts) > 1:
        described["parts"] = list(row.parts)
    return described


def _describe_rejected(row: RejectedRow) -> dict[str, Any]:
    described: dict[str, Any] = {
        "source_row": row.source_row,
        "status": "rejected",
        "reasons": list(row.reasons),
        "problems": [_describe_problem(problem) for problem in row.problems],
    }
    if row.duplicate_of is not None:
        described["duplicate_of"] = row.duplicate_of
    return described


def _describe_bill(row: BillRow) -> dict[str, Any]:
    return {
        "source_row": row.source_row,
        "status": "valid",
        "bill_operator": row.bill_operator,
        "bill_number": row.bill_number,
        "amount": str(row.amount),
        "mobile_number": row.mobile_number,
        "month": row.month,
        "note": row.note,
        "warnings": [],
        "notes": list(row.notes),
        "extra": dict(row.extra),
    }


def _describe_problem(problem: Problem) -> dict[str, str]:
    return {
        "column": problem.column,
        "value": problem.value,
        "reason": problem.reason,
        "message": problem.message,
    }


def problems_of(validation: Validation) -> list[Problem]:
    """Return every problem in file order, a duplicate row as one problem."""
    problems: list[Problem] = []
    for row in validation.rows:
        if isinstance(row, RejectedRow):
            problems.extend(row.problems)
        elif isinstance(row, ValidRow | BillRow) and row.duplicate_of is not None:
            message = _fix("duplicate_row", "", other=row.duplicate_of)
            problems.append(Problem(row.source_row, "", "", "duplicate_row", message))
    return problems


def count_reasons(validation: Validation) -> dict[str, int]:
    """Return how many problems there are of each reason code, most first."""
    counts = Counter(problem.reason for problem in problems_of(validation))
    return dict(counts.most_common())


def format_problems(validation: Validation, limit: int | None = None) -> list[str]:
    """Return one line per problem: row, column, value, reason and fix.

    ``limit`` caps the number of lines; ``count_reasons`` gives the totals.
    """
    problems = problems_of(validation)
    shown = problems if limit is None else problems[: max(limit, 0)]
    lines = [_problem_line(problem) for problem in shown]
    if len(shown) < len(problems):
        hidden = len(problems) - len(shown)
        lines.append(f"... and {hidden} more problems; raise --limit to see them.")
    return lines


def _problem_line(problem: Problem) -> str:
    where = f"row {problem.source_row}"
    if problem.column:
        where += f", column {problem.column}"
    return f"{where}: {problem.reason}: {problem.message}"


def write_rejects(validation: Validation, path: str | os.PathLike[str]) -> None:
    """Write the rejected rows as CSV, original cells first, to fix and reuse.

    The file has the batch's own header plus ``reason`` (codes joined by
    ``;``) and ``message``. Duplicate rows are left out because they are
    not errors: sending them is a choice (--allow-duplicates). The file is
    UTF-8 with a BOM, so that Excel opens it correctly, and is written to a
    temporary name and renamed, so a reader never sees half of it.
    """
    rejected = validation.rejected_rows
    header = list(validation.table.header)
    for row in rejected:
        header += [name for name in row.raw if name not in header]
    lines = [header + ["reason", "message"]]
    for row in rejected:
        cells = [_escape_formula(row.raw.get(name, "")) for name in header]
        messages = " ".join(f"{p.column}: {p.message}." for p in row.problems)
        lines.append(cells + [";".join(row.reasons), messages])
    _write_atomic(Path(path), lines)


def _escape_formula(text: str) -> str:
    # A cell that starts like a formula would run as one when the file is
    # opened in a spreadsheet. Phone numbers such as +880... stay as they are.
    if not text or text[0] not in "=+-@\t\r":
        return text
    if text[0] in "+-" and all(char in "0123456789 ()-." for char in text[1:]):
        return text
    return "'" + text


def _write_atomic(path: Path, lines: Sequence[Sequence[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(lines)
    directory = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8-sig", newline="") as file:
            file.write(buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
