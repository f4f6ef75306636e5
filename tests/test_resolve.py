"""Rows that status never saw go to review, and a person resolves them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import Sandbox, numbered_rows, run_json, run_tool, write_csv


def review_rows(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> tuple[Path, list[str]]:
    sandbox = sandbox_factory("--fault", "drop-before-charge=1", "--seed", "2")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(2))
    journal = tmp_path / "j.sqlite"
    code, result = run_json(
        "run",
        str(batch),
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
        "--settle-timeout",
        "10",
    )
    assert code == 75, result
    assert result["summary"]["counts"] == {"review": 2}
    assert any("need a person" in message for message in result["messages"])
    assert sandbox.charges_per_trxid() == {}
    connection = sqlite3.connect(journal)
    trxids = [row[0] for row in connection.execute("SELECT trxid FROM transactions")]
    connection.close()
    return journal, trxids


def test_resolve_settles_review_row(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    journal, trxids = review_rows(sandbox_factory, tmp_path)
    code, document = run_json(
        "resolve",
        trxids[0],
        "--as",
        "failed",
        "--note",
        "provider has no record",
        "--journal",
        str(journal),
    )
    assert code == 0
    assert document["state"] == "failed"
    _, shown = run_json("show", "--journal", str(journal), _batch_id(journal))
    by_trxid = {row["trxid"]: row for row in shown["rows"]}
    assert by_trxid[trxids[0]]["state"] == "failed"
    assert by_trxid[trxids[0]]["resolution_note"] == "provider has no record"
    assert by_trxid[trxids[1]]["state"] == "review"
    report = tmp_path / "after.csv"
    run_json("report", _batch_id(journal), "--journal", str(journal), "-o", str(report))
    assert "provider has no record" in report.read_text(encoding="utf-8-sig")


def test_resolve_refuses_other_states(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1))
    journal = tmp_path / "j.sqlite"
    run_json(
        "run", str(batch), "--base-url", sandbox.url, "--journal", str(journal), "--yes"
    )
    connection = sqlite3.connect(journal)
    [trxid] = [row[0] for row in connection.execute("SELECT trxid FROM transactions")]
    connection.close()
    result = run_tool(
        "resolve", trxid, "--as", "cancelled", "--note", "x", "--journal", str(journal)
    )
    assert result.returncode == 2
    assert "not review" in result.stderr


def test_show_filters_by_state(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    journal, trxids = review_rows(sandbox_factory, tmp_path)
    run_json(
        "resolve",
        trxids[0],
        "--as",
        "success",
        "--note",
        "confirmed",
        "--journal",
        str(journal),
    )
    _, shown = run_json(
        "show", _batch_id(journal), "--state", "review", "--journal", str(journal)
    )
    assert [row["trxid"] for row in shown["rows"]] == [trxids[1]]


def _batch_id(journal: Path) -> str:
    connection = sqlite3.connect(journal)
    [batch_id] = [row[0] for row in connection.execute("SELECT batch_id FROM batches")]
    connection.close()
    return str(batch_id)


def test_reconcile_records_late_success(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    dropping = sandbox_factory(
        "--fault", "drop-before-charge=1", "--state", str(ledger)
    )
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1))
    journal = tmp_path / "j.sqlite"
    code, _ = run_json(
        "run",
        str(batch),
        "--base-url",
        dropping.url,
        "--journal",
        str(journal),
        "--yes",
        "--settle-timeout",
        "10",
    )
    assert code == 75
    port = dropping.url.rsplit(":", 1)[1]
    dropping.stop()
    healthy = sandbox_factory(
        "--port", port, "--state", str(ledger), "--processing-seconds", "0"
    )
    connection = sqlite3.connect(journal)
    [(trxid, number, amount)] = list(
        connection.execute("SELECT trxid, number, amount FROM transactions")
    )
    connection.close()
    # The provider charged it after all: a late delivery of the lost request.
    httpx.post(
        healthy.url + "/api/recharge",
        json={
            "successtopup_key": "k",
            "successtopup_secret": "s",
            "number": number,
            "operator": "GP",
            "type": "prepaid",
            "amount": amount,
            "trxid": trxid,
        },
        timeout=10,
    ).raise_for_status()
    run_json(
        "reconcile",
        "--base-url",
        healthy.url,
        "--journal",
        str(journal),
        "--timeout",
        "5",
    )
    refused = run_tool(
        "resolve", trxid, "--as", "failed", "--note", "x", "--journal", str(journal)
    )
    accepted = run_tool(
        "resolve",
        trxid,
        "--as",
        "success",
        "--note",
        "status says so",
        "--journal",
        str(journal),
    )
    assert refused.returncode == 2
    assert "--as success" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr
