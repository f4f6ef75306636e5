"""The real-world input cases: every row's verdict, the totals and the reader.

Each folder under tests/data/cases contains a batch file and an expected.json
with the verdict for every physical row after the header. Folders of the
shared corpus that are not copied here are checked too, when it exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bulk_topup.errors import InputError
from bulk_topup.reading import read_batch
from bulk_topup.validation import describe_validation, validate_table

CASES = Path(__file__).parent / "data" / "cases"
# The shared case corpus sits beside the repository when it is present.
SHARED_CASES = Path(__file__).resolve().parents[2] / "shared" / "cases"
READER_FIELDS = ("format", "encoding", "delimiter", "header_row", "sheet")
READ_ERRORS = frozenset(
    {
        "file_not_found",
        "unsupported_format",
        "no_header",
        "missing_columns",
        "ambiguous_sheet",
        "file_too_large",
        "encrypted",
        "unreadable",
    }
)


def _input_cases(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        expected = folder / "expected.json"
        if expected.is_file() and _expectations(_load(expected)):
            found.append(folder)
    return found


def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _expectations(expected: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Return (input file, expectation) pairs that concern reading a file."""
    if isinstance(expected.get("files"), dict):
        pairs = list(expected["files"].items())
    elif expected.get("input_files"):
        pairs = [(expected["input_files"][0], expected)]
    else:
        pairs = []
    return [(name, item) for name, item in pairs if _is_input(item)]


def _is_input(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    return "rows" in item or _error_code(item) in READ_ERRORS


def _error_code(item: dict[str, Any]) -> str | None:
    error = item.get("file_error")
    if isinstance(error, dict):
        return str(error.get("code"))
    return None if error is None else str(error)


def _uncopied_shared_cases() -> list[Path]:
    copied = {folder.name for folder in _input_cases(CASES)}
    return [f for f in _input_cases(SHARED_CASES) if f.name not in copied]


def _validate(batch: Path, expected: dict[str, Any]) -> dict[str, Any]:
    sheet = expected.get("sheet_option") or expected.get("reader", {}).get(
        "sheet_option"
    )
    return describe_validation(validate_table(read_batch(batch, sheet=sheet)))


def _check_case(folder: Path) -> None:
    for name, expected in _expectations(_load(folder / "expected.json")):
        _check_file(folder / name, expected)


def _check_file(batch: Path, expected: dict[str, Any]) -> None:
    code = _error_code(expected)
    if code in READ_ERRORS:
        with pytest.raises(InputError) as raised:
            _validate(batch, expected)
        assert raised.value.code == code
        return
    document = _validate(batch, expected)
    _check_reader(document, expected.get("reader", {}))
    rows = {row["source_row"]: row for row in document["rows"]}
    assert sorted(rows) == [row["source_row"] for row in expected["rows"]]
    for row in expected["rows"]:
        _check_row(rows[row["source_row"]], row)
    if "totals" in expected:
        assert document["totals"] == expected["totals"]


def _check_reader(document: dict[str, Any], reader: dict[str, Any]) -> None:
    for name in READER_FIELDS:
        if name in reader:
            assert document[name] == reader[name], name


def _check_row(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    where = f"row {expected['source_row']}"
    assert actual["status"] == expected["expect"], where
    if expected["expect"] == "valid":
        for name in ("number", "operator", "type", "amount", "package_id"):
            assert actual[name] == expected[name], f"{where} {name}"
        assert actual["warnings"] == expected.get("warnings", []), where
    elif expected["expect"] == "rejected":
        accepted = [expected["reasons"], expected.get("accept_reasons_also")]
        assert actual["reasons"] in accepted, where
        assert actual.get("duplicate_of") == expected.get("duplicate_of"), where
    else:
        assert actual["reason"] == expected["reason"], where


@pytest.mark.parametrize("folder", _input_cases(CASES), ids=lambda f: f.name)
def test_input_case_matches_expected(folder: Path) -> None:
    _check_case(folder)


@pytest.mark.parametrize("folder", _uncopied_shared_cases(), ids=lambda f: f.name)
def test_shared_input_case_matches_expected(folder: Path) -> None:
    _check_case(folder)


def test_input_cases_are_present() -> None:
    assert len(_input_cases(CASES)) >= 14


def test_resaved_file_normalises_like_original() -> None:
    folder = CASES / "C28-resume-after-crash-same-trxids"
    original = validate_table(read_batch(folder / "input.csv"))
    resaved = validate_table(read_batch(folder / "input_resaved.csv"))
    keys = sorted(row.key for row in original.valid_rows)
    assert sorted(row.key for row in resaved.valid_rows) == keys


def test_modified_file_changes_one_row() -> None:
    folder = CASES / "C28-resume-after-crash-same-trxids"
    original = validate_table(read_batch(folder / "input.csv"))
    modified = validate_table(read_batch(folder / "input_modified.csv"))
    before = {row.key for row in original.valid_rows}
    after = {row.key for row in modified.valid_rows}
    assert after - before == {("01511000404", "TT", "prepaid", 300, "")}
