"""Reports: the journal's view of a batch, row by row, with a summary.

A report joins each input row with its transactions: the input columns as
read, the normalised values, trxid, generation, state, conflict flag, the API's
message and status, the last webhook's comment and note, the number of
attempts, and the first-sent and final times in Asia/Dhaka with their offset.
Every file is written to a temporary name and renamed, so a crash never leaves
half a report under the final name.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import crashpoints
from .errors import ConfigError
from .journal import Batch, Journal, Transaction
from .models import State
from .planning import DHAKA

FORMATS = ("csv", "json", "xlsx", "html")
COLUMNS = (
    "source_row",
    "number",
    "operator",
    "type",
    "amount",
    "package_id",
    "reference",
    "trxid",
    "part",
    "generation",
    "state",
    "reason",
    "conflict",
    "message",
    "provider_status",
    "webhook_comment",
    "webhook_note",
    "attempts",
    "first_sent_at",
    "final_at",
    "repeat_of",
    "duplicate_of",
    "resolution_note",
    "notes",
    "warnings",
)
# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def to_dhaka(value: str | None) -> str:
    """Return an ISO 8601 UTC time as Asia/Dhaka time with its offset."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value).astimezone(DHAKA)
    return moment.isoformat(timespec="seconds")


def report_rows(journal: Journal, batch: Batch) -> list[dict[str, str]]:
    """Return one report row per transaction, input columns first."""
    transactions = journal.transactions(batch.batch_id)
    input_columns = _input_columns(transactions)
    rows = []
    for tx in transactions:
        row = {f"input:{name}": tx.raw.get(name, "") for name in input_columns}
        row.update(_transaction_columns(tx))
        rows.append(row)
    return rows


def _input_columns(transactions: Sequence[Transaction]) -> list[str]:
    names: dict[str, None] = {}
    for tx in transactions:
        names.update(dict.fromkeys(tx.raw))
    return list(names)


def _transaction_columns(tx: Transaction) -> dict[str, str]:
    values: dict[str, Any] = {
        "source_row": tx.source_row,
        "number": tx.number,
        "operator": tx.operator,
        "type": tx.type,
        "amount": tx.amount,
        "package_id": tx.package_id,
        "reference": tx.reference,
        "trxid": tx.trxid,
        "part": f"{tx.part}/{tx.parts}",
        "generation": tx.generation,
        "state": tx.state.value,
        "reason": tx.reason,
        "conflict": "yes" if tx.conflict else "",
        "message": tx.message,
        "provider_status": tx.provider_status,
        "webhook_comment": tx.webhook_comment,
        "webhook_note": tx.webhook_note,
        "attempts": tx.attempts,
        "first_sent_at": to_dhaka(tx.first_sent_at),
        "final_at": to_dhaka(tx.final_at),
        "repeat_of": tx.repeat_of,
        "duplicate_of": tx.duplicate_of,
        "resolution_note": tx.resolution_note,
        "notes": "; ".join(tx.notes),
        "warnings": ", ".join(tx.warnings),
    }
    return {name: "" if value is None else str(value) for name, value in values.items()}


def summarize(journal: Journal, batch: Batch) -> dict[str, Any]:
    """Return counts and Taka per state and per operator, and the balances."""
    per_state: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "taka": 0})
    per_operator: dict[str, dict[str, int]] = defaultdict(
        lambda: {"rows": 0, "taka": 0, "success_taka": 0}
    )
    for tx in journal.transactions(batch.batch_id):
        amount = tx.amount or 0
        per_state[tx.state.value]["rows"] += 1
        per_state[tx.state.value]["taka"] += amount
        if tx.operator:
            per_operator[tx.operator]["rows"] += 1
            per_operator[tx.operator]["taka"] += amount
            if tx.state is State.SUCCESS:
                per_operator[tx.operator]["success_taka"] += amount
    success_taka = per_state.get(State.SUCCESS.value, {"taka": 0})["taka"]
    summary: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "file": batch.file,
        "target": batch.target,
        "created_at": batch.created_at,
        "halted": batch.halted_reason,
        "counts": {state: values["rows"] for state, values in per_state.items()},
        "taka": {state: values["taka"] for state, values in per_state.items()},
        "operators": dict(per_operator),
        "success_taka": success_taka,
        "balance_before": batch.balance_before,
        "balance_after": batch.balance_after,
    }
    summary.update(_balance_check(batch, success_taka))
    return summary


def _balance_check(batch: Batch, success_taka: int) -> dict[str, Any]:
    if batch.balance_before is None or batch.balance_after is None:
        return {"balance_change": None, "balance_mismatch": None}
    change = Decimal(batch.balance_before) - Decimal(batch.balance_after)
    # NOTE: rows still open when the balance was read were already charged,
    # so a mismatch is expected until every row is final.
    return {
        "balance_change": str(change),
        "balance_mismatch": str(change - success_taka)
        if change != success_taka
        else None,
    }


def escape_cell(value: str) -> str:
    """Return a cell that no spreadsheet will run as a formula."""
    if value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def render_csv(rows: Sequence[Mapping[str, str]]) -> str:
    """Return rows as CSV text with a BOM, every cell escaped."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    fieldnames = list(rows[0]) if rows else list(COLUMNS)
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: escape_cell(value) for name, value in row.items()})
    return buffer.getvalue()


def render_json(rows: Sequence[Mapping[str, str]], summary: Mapping[str, Any]) -> str:
    """Return the summary and rows as one JSON document."""
    return json.dumps({"summary": summary, "rows": list(rows)}, indent=2, default=str)


def write_xlsx(
    path: Path, rows: Sequence[Mapping[str, str]], summary: Mapping[str, Any]
) -> None:
    """Write a workbook with a rows sheet of text cells and a summary sheet."""
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False})
    text = workbook.add_format({"num_format": "@"})
    sheet = workbook.add_worksheet("rows")
    fieldnames = list(rows[0]) if rows else list(COLUMNS)
    for column, name in enumerate(fieldnames):
        sheet.write_string(0, column, name)
        sheet.set_column(column, column, None, text)
    for index, row in enumerate(rows, 1):
        for column, name in enumerate(fieldnames):
            sheet.write_string(index, column, row.get(name, ""), text)
    summary_sheet = workbook.add_worksheet("summary")
    for index, (name, value) in enumerate(_flatten(summary)):
        summary_sheet.write_string(index, 0, name)
        summary_sheet.write_string(index, 1, value)
    workbook.close()


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for name, value in values.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", "" if value is None else str(value)


def render_html(rows: Sequence[Mapping[str, str]], summary: Mapping[str, Any]) -> str:
    """Return a self-contained page: the summary, two charts and every row."""
    title = f"Batch {summary['batch_id']}"
    counts = summary["counts"]
    operators = {name: values["taka"] for name, values in summary["operators"].items()}
    fieldnames = list(rows[0]) if rows else list(COLUMNS)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in fieldnames)
    body = "\n".join(
        "<tr>"
        + "".join(f"<td>{html.escape(row.get(name, ''))}</td>" for name in fieldnames)
        + "</tr>"
        for row in rows
    )
    facts = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in _flatten(summary)
        if "." not in name
    )
    return _PAGE.format(
        title=html.escape(title),
        facts=facts,
        states_chart=_bar_chart("Rows per state", counts),
        operators_chart=_bar_chart("Taka per operator", operators),
        header=header,
        body=body,
    )


def _bar_chart(title: str, values: Mapping[str, int]) -> str:
    """Return an inline SVG bar chart of named counts."""
    width, bar_height = 420, 22
    largest = max(values.values(), default=0) or 1
    bars = []
    for index, (name, value) in enumerate(sorted(values.items())):
        y = index * (bar_height + 6)
        length = int(260 * value / largest)
        bars.append(
            f'<text x="0" y="{y + 16}">{html.escape(name)}</text>'
            f'<rect x="110" y="{y}" width="{length}" height="{bar_height}"></rect>'
            f'<text x="{116 + length}" y="{y + 16}">{value}</text>'
        )
    height = max(1, len(values)) * (bar_height + 6)
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg width="{width}" height="{height}" role="img">{"".join(bars)}</svg>'
        "</figure>"
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
rect {{ fill: #3b7dd8; }} svg text {{ font-size: 12px; }}
figure {{ display: inline-block; margin-right: 3em; }}
</style></head><body>
<h1>{title}</h1>
<table>{facts}</table>
{states_chart}{operators_chart}
<h2>Rows</h2>
<table><thead><tr>{header}</tr></thead><tbody>
{body}
</tbody></table>
</body></html>
"""


def write_atomically(path: Path, content: str | None, writer: Any = None) -> None:
    """Write a file under a temporary name in its folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    os.close(handle)
    try:
        if writer is not None:
            writer(Path(temporary))
        else:
            Path(temporary).write_text(content or "", encoding="utf-8", newline="")
        crashpoints.crash_point("while_writing_report")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_report_path(path: Path) -> str:
    """Return the report format a path asks for, or raise ConfigError.

    Checked before a run starts, so that a bad path never fails after the
    money has been sent.
    """
    report_format = path.suffix.lstrip(".").lower()
    if report_format not in FORMATS:
        raise ConfigError(
            f"Cannot write a report to {path}: the name must end in "
            f"{', '.join('.' + name for name in FORMATS)}."
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"Cannot write a report to {path}: {parent} is a file."
                )
            break
    if path.is_dir():
        raise ConfigError(f"Cannot write a report to {path}: it is a folder.")
    return report_format


def default_report_path(folder: Path, batch_id: str, extension: str) -> Path:
    """Return a report name with the batch id and the time, never reused."""
    stamp = datetime.now(DHAKA).strftime("%Y%m%dT%H%M%S")
    return folder / f"{batch_id}-report-{stamp}.{extension}"


def write_report(
    journal: Journal, batch: Batch, path: Path, report_format: str = "csv"
) -> Path:
    """Write one report of a batch in one format and return its path."""
    rows = report_rows(journal, batch)
    summary = summarize(journal, batch)
    if report_format == "csv":
        write_atomically(path, render_csv(rows))
    elif report_format == "json":
        write_atomically(path, render_json(rows, summary))
    elif report_format == "html":
        write_atomically(path, render_html(rows, summary))
    elif report_format == "xlsx":
        write_atomically(path, None, lambda target: write_xlsx(target, rows, summary))
    else:
        raise ValueError(f"unknown report format {report_format!r}")
    return path
