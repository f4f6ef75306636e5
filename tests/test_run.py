"""The main job end to end: a real sandbox process, a real journal file."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import stat
from pathlib import Path

from conftest import SECRET, Sandbox, numbered_rows, run_json, run_tool, write_csv

from bulk_topup.models import FINAL_STATES

SAMPLE = (
    Path(__file__).resolve().parent.parent / "sample_batches" / "reseller-batch.csv"
)


def journal_rows(journal: Path) -> list[dict[str, object]]:
    connection = sqlite3.connect(journal)
    connection.row_factory = sqlite3.Row
    rows = [dict(row) for row in connection.execute("SELECT * FROM transactions")]
    connection.close()
    return rows


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def run_batch(
    sandbox: Sandbox, batch: Path, journal: Path, *extra: str
) -> tuple[int, dict]:
    return run_json(
        "run",
        str(batch),
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
        "--rate",
        "200",
        "--concurrency",
        "16",
        "--settle-timeout",
        "20",
        *extra,
    )


def test_sample_batch_charged_once(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = shutil.copy(SAMPLE, tmp_path / "batch.csv")
    journal = tmp_path / "journal.sqlite"
    report = tmp_path / "report.csv"
    code, result = run_batch(
        sandbox, Path(batch), journal, "--skip-invalid", "--report", str(report)
    )
    ledger = sandbox.ledger()
    charges = sandbox.charges_per_trxid()
    valid = [row for row in journal_rows(journal) if row["state"] != "invalid"]
    assert code == 0, result
    assert len(valid) >= 200
    assert set(charges) == {row["trxid"] for row in valid}
    assert max(charges.values()) == 1
    by_trxid = {charge["trxid"]: charge for charge in ledger["charges"]}
    for row in read_report(report):
        if row["state"] == "invalid":
            assert row["trxid"] not in by_trxid
            continue
        charge = by_trxid[row["trxid"]]
        assert row["state"] == "success"
        assert charge["status"] == "Success"
        assert row["number"] == charge["number"]
        assert int(row["amount"]) == int(charge["amount"])
        assert row["operator"] == charge["operator"]


def test_second_run_sends_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(20))
    journal = tmp_path / "journal.sqlite"
    first_code, _ = run_batch(sandbox, batch, journal)
    requests_before = sandbox.ledger()["requests"]
    renamed = shutil.copy(batch, tmp_path / "renamed.csv")
    result = run_tool(
        "run",
        str(renamed),
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
    )
    assert first_code == 0
    assert result.returncode == 0, result.stderr
    assert "is complete" in result.stdout + result.stderr
    assert sandbox.ledger()["requests"] == requests_before


def test_invalid_row_stops_run(sandbox: Sandbox, tmp_path: Path) -> None:
    rows = numbered_rows(5)
    rows[2][3] = "50.5"
    batch = write_csv(tmp_path / "b.csv", rows)
    journal = tmp_path / "journal.sqlite"
    result = run_tool(
        "run", str(batch), "--base-url", sandbox.url, "--journal", str(journal), "--yes"
    )
    assert result.returncode == 65
    assert "row 4" in result.stdout + result.stderr
    assert "amount" in result.stdout + result.stderr
    assert "50.5" in result.stdout + result.stderr
    assert "amount_not_whole_taka" in result.stdout + result.stderr
    assert sandbox.ledger()["requests"] == 0


def test_skip_invalid_sends_the_rest(sandbox: Sandbox, tmp_path: Path) -> None:
    rows = numbered_rows(5)
    rows[2][0] = "12345"
    batch = write_csv(tmp_path / "b.csv", rows)
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(sandbox, batch, journal, "--skip-invalid")
    assert code == 0, result
    assert result["summary"]["counts"] == {"invalid": 1, "success": 4}
    assert len(sandbox.charges_per_trxid()) == 4


def test_secret_never_written(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(10))
    journal = tmp_path / "journal.sqlite"
    log = tmp_path / "debug.log"
    report = tmp_path / "report.csv"
    result = run_tool(
        "run",
        str(batch),
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
        "-vv",
        "--log-file",
        str(log),
        "--report",
        str(report),
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    written = [journal, log, report, *tmp_path.glob("journal.sqlite*")]
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.stdout + result.stderr
    assert log.read_text().count("HTTP 200") >= 10


def test_json_summary_counts_rows(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(7))
    code, result = run_batch(sandbox, batch, tmp_path / "j.sqlite")
    assert code == 0
    assert result["reason"] == "complete"
    assert result["summary"]["counts"] == {"success": 7}
    assert result["summary"]["success_taka"] == sum(10 + i for i in range(7))


def test_embedded_sandbox_run(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(5))
    code, result = run_json(
        "run",
        str(batch),
        "--sandbox",
        "--yes",
        "--journal",
        str(tmp_path / "j.sqlite"),
        "--settle-timeout",
        "30",
    )
    assert code == 0, result
    assert result["summary"]["counts"] == {"success": 5}
    assert (tmp_path / "j-ledger.sqlite").exists()


def test_final_states_after_run(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(10))
    journal = tmp_path / "j.sqlite"
    run_batch(sandbox, batch, journal)
    states = {row["state"] for row in journal_rows(journal)}
    assert states <= {state.value for state in FINAL_STATES}


def test_report_command_writes_formats(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(3))
    journal = tmp_path / "j.sqlite"
    _, result = run_batch(sandbox, batch, journal)
    out = tmp_path / "out"
    out.mkdir()
    code, document = run_json(
        "report",
        result["batch_id"],
        "--journal",
        str(journal),
        "--format",
        "csv,json,xlsx",
        "-o",
        str(out),
    )
    assert code == 0
    suffixes = sorted(Path(path).suffix for path in document["reports"])
    assert suffixes == [".csv", ".json", ".xlsx"]
    data = json.loads(next(out.glob("*.json")).read_text())
    assert len(data["rows"]) == 3


def test_batches_lists_progress(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(4))
    journal = tmp_path / "j.sqlite"
    run_batch(sandbox, batch, journal)
    code, document = run_json("batches", "--journal", str(journal))
    assert code == 0
    [item] = document["batches"]
    assert item["counts"] == {"success": 4}
    assert item["total_amount"] == 10 + 11 + 12 + 13
    assert item["kind"] == "recharge"


def test_on_finish_gets_summary(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(2))
    received = tmp_path / "summary.json"
    environment = tmp_path / "environment.txt"
    code, _ = run_batch(
        sandbox,
        batch,
        tmp_path / "j.sqlite",
        "--on-finish",
        f"cat > {received}; env > {environment}",
    )
    document = json.loads(received.read_text())
    assert SECRET not in environment.read_text()
    assert code == 0
    assert document["summary"]["counts"] == {"success": 2}
    assert document["exit_code"] == 0
