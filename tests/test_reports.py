"""Reports: formula escaping, text cells, atomic writes, every format."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest
from test_journal import new_journal

from bulk_topup.journal import Journal
from bulk_topup.models import State
from bulk_topup.reports import escape_cell, render_csv, write_report


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+8801711", "-5", "@SUM(A1)", "\tx", "\rx"],
    ids=["equals", "plus", "minus", "at", "tab", "cr"],
)
def test_formula_starts_are_escaped(value: str) -> None:
    assert escape_cell(value) == "'" + value


def test_plain_cells_untouched() -> None:
    assert escape_cell("01711000001") == "01711000001"


def test_csv_has_bom_and_escapes() -> None:
    text = render_csv([{"number": "01711000001", "name": "=HYPERLINK(1)"}])
    assert text.startswith("\ufeff")
    assert "'=HYPERLINK(1)" in text
    assert "01711000001" in text


def settled_journal(tmp_path: Path) -> Journal:
    journal = new_journal(tmp_path, [State.PLANNED, State.PLANNED])
    journal.update_fields("BKTEST0000", raw='{"name": "=cmd()", "number": "01711"}')
    for trxid, final in (("BKTEST0000", State.SUCCESS), ("BKTEST0001", State.FAILED)):
        journal.start_attempts([(trxid, "h")])
        journal.transition(trxid, final, cause="test")
    return journal


@pytest.mark.parametrize("report_format", ["csv", "json", "xlsx", "html"])
def test_every_format_written(tmp_path: Path, report_format: str) -> None:
    journal = settled_journal(tmp_path)
    batch = journal.get_batch("b1")
    assert batch is not None
    path = write_report(journal, batch, tmp_path / f"r.{report_format}", report_format)
    assert path.stat().st_size > 0
    assert list(tmp_path.glob(".r.*.tmp")) == []


def test_xlsx_cells_are_text(tmp_path: Path) -> None:
    journal = settled_journal(tmp_path)
    batch = journal.get_batch("b1")
    assert batch is not None
    path = write_report(journal, batch, tmp_path / "r.xlsx", "xlsx")
    workbook = openpyxl.load_workbook(path)
    sheet = workbook["rows"]
    header = [cell.value for cell in sheet[1]]
    first = {name: cell for name, cell in zip(header, sheet[2], strict=True)}
    assert first["number"].value == "01711000000"
    assert first["number"].data_type == "s"
    assert first["input:name"].value == "=cmd()"
    assert first["input:name"].data_type == "s"
    assert "summary" in workbook.sheetnames


def test_json_summary_counts(tmp_path: Path) -> None:
    journal = settled_journal(tmp_path)
    batch = journal.get_batch("b1")
    assert batch is not None
    path = write_report(journal, batch, tmp_path / "r.json", "json")
    summary = json.loads(path.read_text())["summary"]
    assert summary["counts"] == {"success": 1, "failed": 1}
    assert summary["success_taka"] == 50


def test_html_escapes_cells(tmp_path: Path) -> None:
    journal = settled_journal(tmp_path)
    journal.update_fields("BKTEST0001", message="<script>alert(1)</script>")
    batch = journal.get_batch("b1")
    assert batch is not None
    page = write_report(journal, batch, tmp_path / "r.html", "html").read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;" in page
    assert "<svg" in page
