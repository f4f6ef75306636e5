"""Validation: every normalisation rule, duplicates, splitting and outputs."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_topup import validation as validation_module
from bulk_topup.errors import InputError
from bulk_topup.models import (
    AmountPolicy,
    BillRow,
    Cell,
    CellKind,
    RejectedRow,
    SkippedRow,
    SourceRecord,
    SourceTable,
    Validation,
    ValidRow,
)
from bulk_topup.normalise import (
    clean_text,
    normalise_month,
    normalise_number,
    normalise_operator,
    normalise_type,
    parse_amount,
)
from bulk_topup.validation import (
    count_reasons,
    describe_validation,
    format_problems,
    split_amount,
    validate_table,
    write_rejects,
)

HEADER = ("number", "operator", "type", "amount", "package_id")


def table(
    rows: Sequence[tuple[str, ...]],
    header: tuple[str, ...] = HEADER,
    decimal_comma: bool = False,
    fmt: str = "csv",
) -> SourceTable:
    records = tuple(
        SourceRecord(index, tuple(Cell(text) for text in row))
        for index, row in enumerate(rows, 2)
    )
    return SourceTable(
        path="batch.csv",
        format=fmt,
        header=header,
        records=records,
        header_row=1,
        decimal_comma=decimal_comma,
    )


def only_row(
    row: tuple[str, ...], policy: AmountPolicy | None = None, **options: object
) -> ValidRow | RejectedRow | SkippedRow | BillRow:
    return validate_table(table([row], **options), policy).rows[0]  # type: ignore[arg-type]


def reasons(row: tuple[str, ...], policy: AmountPolicy | None = None) -> list[str]:
    result = only_row(row, policy)
    assert isinstance(result, RejectedRow), result
    return list(result.reasons)


def number_of(text: str, kind: CellKind = CellKind.TEXT) -> str | None:
    outcome = normalise_number(Cell(text, kind))
    return outcome.value or outcome.reason


# --- text cleaning -----------------------------------------------------------


def test_clean_text_maps_unicode_digits() -> None:
    assert clean_text("০১৭ ٠١ ０１") == "017 01 01"


def test_clean_text_drops_invisible_characters() -> None:
    assert clean_text("\u200b017\u200d1\ufeff\u2060") == "0171"


def test_clean_text_turns_spaces_plain() -> None:
    assert clean_text("\u00a0017\u202f11\u2007") == "017 11"


# --- number ------------------------------------------------------------------

NUMBER_CASES = [
    ("01712345678", "01712345678"),
    ("1712345678", "01712345678"),
    ("+8801712345678", "01712345678"),
    ("8801712345678", "01712345678"),
    ("008801712345678", "01712345678"),
    ("+88 01712345678", "01712345678"),
    ("(+88) 017-1234-5678", "01712345678"),
    ("+880 (17) 1234-5678", "01712345678"),
    ("017.1234.5678", "01712345678"),
    ("017\u20131234\u20145678", "01712345678"),
    ("1712345678.0", "01712345678"),
    ("8801712345678.00", "01712345678"),
    ("০১৭১২৩৪৫৬৭৮", "01712345678"),
    ("1.71E+09", "number_scientific_notation"),
    ("1.71e9", "number_scientific_notation"),
    ("8,80171E+12", "number_scientific_notation"),
    ("712345678", "invalid_number"),
    ("01212345678", "invalid_number"),
    ("00000000000", "invalid_number"),
    ("017123456789", "invalid_number"),
    ("01711000039 / 01811000040", "invalid_number"),
    ("01711000041 - 01811000042", "invalid_number"),
    ("017+12345678", "invalid_number"),
    ("phone", "invalid_number"),
    ("", "missing_number"),
    ("N/A", "missing_number"),
    ("  ", "missing_number"),
]


@pytest.mark.parametrize(("text", "expected"), NUMBER_CASES)
def test_number_normalises_or_rejects(text: str, expected: str) -> None:
    assert number_of(text) == expected


def test_number_cell_digits_are_used() -> None:
    assert number_of("1711000171", CellKind.NUMBER) == "01711000171"


def test_number_cell_with_fraction_rejected() -> None:
    assert number_of("1711000171.5", CellKind.NUMBER) == "invalid_number"


def test_number_date_cell_rejected() -> None:
    assert number_of("2024-01-02", CellKind.DATE) == "invalid_number"


def test_number_formula_error_reported() -> None:
    assert number_of("#REF!", CellKind.ERROR) == "formula_error"


def test_number_formula_without_value_reported() -> None:
    kind = CellKind.FORMULA_WITHOUT_VALUE
    assert number_of("=A1", kind) == "formula_without_cached_value"


VALID_NUMBER = st.from_regex(r"01[3-9][0-9]{8}", fullmatch=True)
SEPARATORS = st.sampled_from([" ", "-", ".", "\u00a0", "\u200b", "\u2013", ""])
PREFIXES = st.sampled_from(["", "+88", "88", "+880", "880", "00880", "0088", "(+88) "])
BENGALI = str.maketrans("0123456789", "০১২৩৪৫৬৭৮৯")


@st.composite
def decorated_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """Draw a valid number and the way a person or a spreadsheet wrote it."""
    number = draw(VALID_NUMBER)
    prefix = draw(PREFIXES)
    digits = number
    if prefix in ("+880", "880", "00880") or (not prefix and draw(st.booleans())):
        digits = number[1:]
    pieces = []
    for digit in digits:
        pieces.append(digit)
        if draw(st.integers(0, 5)) == 0:
            pieces.append(draw(SEPARATORS))
    text = prefix + "".join(pieces)
    if draw(st.booleans()):
        text = text.translate(BENGALI)
    if prefix == "" and draw(st.integers(0, 4)) == 0:
        text = digits + ".0"
    if draw(st.booleans()):
        text = f"({text[:3]}){text[3:]}"
    return number, text


@given(decorated_numbers())
@settings(max_examples=400, deadline=None)
def test_number_decorations_keep_the_number(case: tuple[str, str]) -> None:
    number, text = case
    assert number_of(text) in (number, "invalid_number")


@given(st.text(alphabet="0123456789+-(). ০১২৩৪৫৬৭৮৯\u00a0e", max_size=24))
@settings(max_examples=400, deadline=None)
def test_number_result_keeps_input_digits(text: str) -> None:
    result = number_of(text)
    if result and result.startswith("01"):
        digits = "".join(c for c in clean_text(text) if c.isdigit())
        assert digits.endswith(result[1:])


# --- operator and type -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("gp", "GP"),
        (" GrameenPhone ", "GP"),
        ("ROBI", "RB"),
        ("airtel", "AT"),
        ("Banglalink", "BL"),
        ("teletalk", "TT"),
        ("Skitto", "SK"),
        ("brilliant", "BT"),
    ],
)
def test_operator_names_and_codes(text: str, code: str) -> None:
    outcome = normalise_operator(Cell(text), None)
    assert outcome.value == code


@pytest.mark.parametrize("text", ["G P", "Citycell", "XYZ", "RY"])
def test_operator_unknown_is_rejected(text: str) -> None:
    assert normalise_operator(Cell(text), None).reason == "unknown_operator"


@pytest.mark.parametrize(
    ("number", "code"),
    [("013", "GP"), ("017", "GP"), ("014", "BL"), ("019", "BL"), ("015", "TT")]
    + [("016", "AT"), ("018", "RB")],
)
def test_operator_inferred_from_prefix(number: str, code: str) -> None:
    outcome = normalise_operator(Cell("NA"), number + "12345678")
    assert (outcome.value, outcome.warning) == (code, "operator_inferred")


def test_operator_mismatch_is_a_warning() -> None:
    outcome = normalise_operator(Cell("RB"), "01712345678")
    assert (outcome.value, outcome.warning) == ("RB", "operator_prefix_mismatch")


def test_skitto_on_gp_range_matches() -> None:
    assert normalise_operator(Cell("SK"), "01312345678").warning is None


def test_brilliant_never_mismatches() -> None:
    assert normalise_operator(Cell("BT"), "01812345678").warning is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Prepaid", "prepaid"),
        ("pre", "prepaid"),
        ("pre-paid", "prepaid"),
        ("POST PAID", "postpaid"),
        ("post_paid", "postpaid"),
        ("post", "postpaid"),
        ("p", None),
        ("monthly", None),
    ],
)
def test_type_names(text: str, expected: str | None) -> None:
    assert normalise_type(Cell(text)).value == expected


def test_empty_type_defaults_with_warning() -> None:
    outcome = normalise_type(Cell(""))
    assert (outcome.value, outcome.warning) == ("prepaid", "type_defaulted")


def test_skitto_postpaid_rejected_at_type() -> None:
    row = ("01712345678", "SK", "postpaid", "50", "")
    assert reasons(row) == ["skitto_requires_prepaid"]


# --- amount ------------------------------------------------------------------

AMOUNT_CASES = [
    ("50", False, Decimal("50")),
    ("50.00", False, Decimal("50.00")),
    ("৳50", False, Decimal("50")),
    ("50 tk", False, Decimal("50")),
    ("Tk. 50", False, Decimal("50")),
    ("BDT 1,000/-", False, Decimal("1000")),
    ("৫০ টাকা", False, Decimal("50")),
    ("1,00,000", False, Decimal("100000")),
    ("1 000", False, Decimal("1000")),
    ("1.000", False, Decimal("1.000")),
    ("1.000", True, Decimal("1000")),
    ("1.250,00", True, Decimal("1250.00")),
    ("20,5", True, Decimal("20.5")),
    ("1,0000", False, "invalid_amount"),
    ("-50", False, "invalid_amount"),
    ("$50", False, "invalid_amount"),
    ("fifty", False, "invalid_amount"),
    ("5O", False, "invalid_amount"),
    ("1e2", False, "invalid_amount"),
    ("50.", False, "invalid_amount"),
    ("9" * 16, False, "invalid_amount"),
    ("", False, "missing_amount"),
    ("None", False, "missing_amount"),
]


@pytest.mark.parametrize(("text", "comma", "expected"), AMOUNT_CASES)
def test_amount_parsing(text: str, comma: bool, expected: object) -> None:
    parsed = parse_amount(Cell(text), comma)
    assert (parsed.value if parsed.value is not None else parsed.reason) == expected


def test_amount_date_cell_rejected() -> None:
    parsed = parse_amount(Cell("1900-01-09", CellKind.DATE), False)
    assert parsed.reason == "amount_is_date"


def test_amount_fraction_not_whole_taka() -> None:
    assert reasons(("01712345678", "GP", "", "50.5", "")) == ["amount_not_whole_taka"]


def test_amount_below_minimum_rejected() -> None:
    assert reasons(("01712345678", "GP", "", "8", "")) == ["amount_below_minimum"]


def test_amount_zero_below_minimum() -> None:
    assert reasons(("01712345678", "GP", "", "0", "")) == ["amount_below_minimum"]


def test_operator_minimum_applies() -> None:
    policy = AmountPolicy(operator_minimums={"GP": 30})
    row = ("01712345678", "", "", "20", "")
    assert reasons(row, policy) == ["amount_below_minimum"]


def test_operator_maximum_applies() -> None:
    policy = AmountPolicy(operator_maximums={"RB": 1000})
    row = ("01812345678", "RB", "", "1001", "")
    assert reasons(row, policy) == ["amount_above_maximum"]


def test_reasons_follow_column_order() -> None:
    row = ("123", "XYZ", "p", "abc", "")
    assert reasons(row) == [
        "invalid_number",
        "unknown_operator",
        "invalid_type",
        "invalid_amount",
    ]


def test_invalid_number_hides_missing_operator() -> None:
    assert reasons(("123", "", "", "50", "")) == ["invalid_number"]


# --- splitting ---------------------------------------------------------------


def test_split_amount_is_even_larger_first() -> None:
    assert split_amount(2500, 3) == (834, 833, 833)


def test_split_above_fills_parts() -> None:
    row = only_row(
        ("01712345678", "GP", "", "2500", ""), AmountPolicy(split_above=1000)
    )
    assert isinstance(row, ValidRow)
    assert row.parts == (834, 833, 833)


def test_unsplit_row_has_one_part() -> None:
    row = only_row(("01712345678", "GP", "", "500", ""), AmountPolicy(split_above=1000))
    assert isinstance(row, ValidRow)
    assert row.parts == (500,)


def test_package_rows_never_split() -> None:
    row = only_row(
        ("01712345678", "GP", "", "2500", "P1"), AmountPolicy(split_above=1000)
    )
    assert isinstance(row, ValidRow)
    assert row.parts == (2500,)


def test_split_part_below_minimum_rejected() -> None:
    policy = AmountPolicy(split_above=10)
    row = ("01712345678", "GP", "", "11", "")
    assert reasons(row, policy) == ["amount_split_below_minimum"]


def test_split_into_too_many_parts_rejected() -> None:
    policy = AmountPolicy(split_above=10)
    row = ("01712345678", "GP", "", "100000", "")
    assert reasons(row, policy) == ["amount_above_maximum"]


# --- rows --------------------------------------------------------------------


def test_blank_row_is_skipped() -> None:
    row = only_row((" ", "", "", "", ""))
    assert row == SkippedRow(2, "blank_row")


def test_repeated_header_is_skipped() -> None:
    row = only_row(("Number", "OPERATOR", "type", "amount", "package_id"))
    assert row == SkippedRow(2, "repeated_header")


def test_extra_field_is_column_count_mismatch() -> None:
    assert reasons(("01712345678", "GP", "", "10", "500", "")) == [
        "column_count_mismatch"
    ]


def test_short_row_reads_missing_cells_empty() -> None:
    row = only_row(("01712345678", "GP", "", "50"))
    assert isinstance(row, ValidRow)


def test_notes_record_each_change() -> None:
    row = only_row(("+880 1712-345678", "gp", "Prepaid", "50.00", ""))
    assert isinstance(row, ValidRow)
    assert row.notes == (
        "number: was `+880 1712-345678`, sent `01712345678`",
        "operator: was `gp`, sent `GP`",
        "type: was `Prepaid`, sent `prepaid`",
        "amount: was `50.00`, sent `50`",
    )


def test_extra_and_raw_keep_other_columns() -> None:
    header = ("number", "amount", "name", "branch")
    row = only_row(("01712345678", "50", "Rahim", "Dhaka"), header=header)
    assert isinstance(row, ValidRow)
    assert dict(row.extra) == {"name": "Rahim", "branch": "Dhaka"}
    assert row.raw["number"] == "01712345678"


def test_reference_is_kept() -> None:
    header = ("number", "amount", "reference")
    row = only_row(("01712345678", "50", "INV-7"), header=header)
    assert isinstance(row, ValidRow)
    assert row.reference == "INV-7"


def test_missing_required_column_raises() -> None:
    with pytest.raises(InputError) as raised:
        validate_table(table([], header=("number", "operator")))
    assert raised.value.code == "missing_columns"


# --- duplicates --------------------------------------------------------------


def test_later_equal_row_is_duplicate() -> None:
    rows = [("01712345678", "GP", "", "50", ""), ("+8801712345678", "gp", "", "50", "")]
    result = validate_table(table(rows))
    second = result.rows[1]
    assert isinstance(second, ValidRow)
    assert second.duplicate_of == 2


def test_different_references_are_not_duplicates() -> None:
    header = ("number", "amount", "reference")
    rows = [("01712345678", "50", "A"), ("01712345678", "50", "B")]
    result = validate_table(table(rows, header=header))
    assert [row.duplicate_of for row in result.valid_rows] == [None, None]


def test_shared_reference_rejects_both() -> None:
    header = ("number", "amount", "reference")
    rows = [("01712345678", "50", "A"), ("01812345678", "60", "A")]
    result = validate_table(table(rows, header=header))
    assert [list(row.reasons) for row in result.rejected_rows] == [
        ["duplicate_reference"],
        ["duplicate_reference"],
    ]


def test_same_number_warns_number_repeated() -> None:
    rows = [
        ("01712345678", "GP", "prepaid", "50", ""),
        ("01712345678", "GP", "prepaid", "60", ""),
    ]
    result = validate_table(table(rows))
    assert [row.warnings for row in result.valid_rows] == [
        ("number_repeated",),
        ("number_repeated",),
    ]


def test_warnings_keep_their_order() -> None:
    rows = [("01712345678", "", "", "50", ""), ("01712345678", "", "", "60", "")]
    first = validate_table(table(rows)).valid_rows[0]
    assert first.warnings == ("operator_inferred", "type_defaulted", "number_repeated")


# --- the fast path -----------------------------------------------------------

MIXED_ROWS = [
    ("01712345678", "GP", "prepaid", "50", ""),
    ("01712345678", "GP", "prepaid", "50", ""),
    ("01812345678", "", "", "20", "P-1"),
    ("01912345678", "RB", "postpaid", "30", ""),
    ("01312345678", "SK", "prepaid", "40", ""),
    ("01312345678", "SK", "postpaid", "40", ""),
    ("01612345678", "AT", "prepaid", "8", ""),
    ("01512345678", "TT", "prepaid", "1,000", "NA"),
    ("1512345679", "TT", "prepaid", "100", "null"),
    ("", "", "", "", ""),
    ("01512345670", "TT", "prepaid", "2000", ""),
]


def test_fast_path_matches_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = AmountPolicy(split_above=1500, operator_maximums={"RB": 25})
    slow = validate_table(table(MIXED_ROWS), policy)
    monkeypatch.setattr(validation_module, "FAST_PATH_MIN_ROWS", 0)
    fast = validate_table(table(MIXED_ROWS), policy)
    assert fast.rows == slow.rows


def test_fast_path_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation_module, "FAST_PATH_MIN_ROWS", 0)
    calls: list[int] = []
    original = validation_module._check_recharge

    def counting(*args: object) -> object:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(validation_module, "_check_recharge", counting)
    validate_table(table(MIXED_ROWS))
    assert 0 < len(calls) < len(MIXED_ROWS)


# --- bills -------------------------------------------------------------------

BILL_HEADER = ("billOperator", "billNumber", "billAmount", "mobileNumber", "monthName")


def test_bill_batch_is_recognised() -> None:
    rows = [("pbp", "123456", "1,250.50", "+8801712345678", "jan")]
    result = validate_table(table(rows, header=BILL_HEADER + ("note",)))
    row = result.rows[0]
    assert result.kind == "bill"
    assert row == BillRow(
        source_row=2,
        bill_operator="PBP",
        bill_number="123456",
        amount=Decimal("1250.50"),
        mobile_number="01712345678",
        month="January",
        notes=row.notes,  # type: ignore[union-attr]
        raw=row.raw,  # type: ignore[union-attr]
    )


def test_bill_row_reasons_in_order() -> None:
    rows = [("XX", "", "0", "123", "Smarch")]
    result = validate_table(table(rows, header=BILL_HEADER))
    assert list(result.rejected_rows[0].reasons) == [
        "invalid_bill_operator",
        "missing_number",
        "amount_below_minimum",
        "invalid_number",
        "invalid_month",
    ]


def test_bill_amount_allows_two_decimals() -> None:
    rows = [("DPD", "9", "10.005", "01712345678", "May")]
    result = validate_table(table(rows, header=BILL_HEADER))
    assert list(result.rejected_rows[0].reasons) == ["invalid_amount"]


@pytest.mark.parametrize(
    ("text", "month"), [("1", "January"), ("DEC", "December"), ("sept", "September")]
)
def test_month_names(text: str, month: str) -> None:
    assert normalise_month(Cell(text)).value == month


def test_bill_duplicate_is_marked() -> None:
    rows = [("PBP", "1", "10", "01712345678", "May")] * 2
    result = validate_table(table(rows, header=BILL_HEADER))
    assert describe_validation(result)["totals"] == {
        "valid": 1,
        "rejected": 1,
        "skipped": 0,
    }


# --- outputs -----------------------------------------------------------------


def mixed_validation() -> Validation:
    rows = [
        ("01712345678", "GP", "", "50", ""),
        ("01712345678", "GP", "", "50", ""),
        ("123", "GP", "", "5", ""),
        ("", "", "", "", ""),
        ("=cmd|' /C calc'!A0", "GP", "", "50", ""),
    ]
    return validate_table(table(rows))


def test_describe_validation_document_shape() -> None:
    document = describe_validation(mixed_validation())
    assert document["totals"] == {"valid": 1, "rejected": 3, "skipped": 1}
    assert document["rows"][1] == {
        "source_row": 3,
        "status": "rejected",
        "reasons": ["duplicate_row"],
        "duplicate_of": 2,
    }
    assert document["rows"][3] == {
        "source_row": 5,
        "status": "skipped",
        "reason": "blank_row",
    }
    json.dumps(document)


def test_describe_reports_reader_fields() -> None:
    document = describe_validation(mixed_validation())
    assert [document[key] for key in ("file", "format", "header_row")] == [
        "batch.csv",
        "csv",
        1,
    ]


def test_format_problems_one_line_each() -> None:
    lines = format_problems(mixed_validation())
    assert lines[0].startswith("row 3: duplicate_row:")
    assert lines[1].startswith("row 4, column number: invalid_number: `123`")
    assert len(lines) == 4


def test_format_problems_respects_limit() -> None:
    lines = format_problems(mixed_validation(), limit=2)
    assert len(lines) == 3
    assert lines[2].startswith("... and ")
    assert "raise --limit" in lines[2]


def test_count_reasons_totals() -> None:
    assert count_reasons(mixed_validation())["invalid_number"] == 2


def test_write_rejects_round_trips(tmp_path: Path) -> None:
    target = tmp_path / "rejects.csv"
    write_rejects(mixed_validation(), target)
    with target.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*HEADER, "reason", "message"]
    assert rows[1][:5] == ["123", "GP", "", "5", ""]
    assert rows[1][5] == "invalid_number;amount_below_minimum"
    assert rows[2][0] == "'=cmd|' /C calc'!A0"
    assert len(rows) == 3


def test_write_rejects_leaves_no_temporary(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    write_rejects(mixed_validation(), folder / "rejects.csv")
    assert [path.name for path in folder.iterdir()] == ["rejects.csv"]


def test_bill_row_json_shape() -> None:
    rows = [("dpd", "77", "1250,5", "01712345678", "3")]
    validation = validate_table(table(rows, header=BILL_HEADER, decimal_comma=True))
    described = describe_validation(validation)["rows"][0]
    assert described["amount"] == "1250.50"
    assert described["bill_operator"] == "DPD"
    assert described["month"] == "March"
    assert described["mobile_number"] == "01712345678"


CELL_KINDS = st.sampled_from(list(CellKind))
CELL_TEXTS = st.one_of(
    st.text(max_size=14),
    st.sampled_from(["017", "1711000001", "GP", "sk", "post", "50", "1,000", "NA"]),
)


@given(
    st.lists(
        st.lists(st.builds(Cell, CELL_TEXTS, CELL_KINDS), max_size=8),
        max_size=10,
    ),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_any_cells_validate_without_raising(
    rows: list[list[Cell]], decimal_comma: bool
) -> None:
    records = tuple(
        SourceRecord(index, tuple(cells)) for index, cells in enumerate(rows, 2)
    )
    source = SourceTable(
        path="batch.xlsx",
        format="xlsx",
        header=HEADER + ("reference",),
        records=records,
        header_row=1,
        decimal_comma=decimal_comma,
    )
    validation = validate_table(source, AmountPolicy(split_above=100))
    document = describe_validation(validation)
    assert len(document["rows"]) == len(rows)
    json.dumps(document)
    format_problems(validation)
