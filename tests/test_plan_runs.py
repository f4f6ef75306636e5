"""Planning against the sandbox: identity, fixes, repeats, splits."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import Sandbox, numbered_rows, run_json, run_tool, write_csv

from bulk_topup.journal import Journal
from bulk_topup.planning import DHAKA, PlanOptions, normalise_base_url, plan_batch
from bulk_topup.reading import read_batch
from bulk_topup.validation import validate_table


def run_args(sandbox: Sandbox, journal: Path, *extra: str) -> list[str]:
    return [
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
        "--rate",
        "200",
        "--settle-timeout",
        "20",
        *extra,
    ]


def plan_trxids(batch: Path, journal: Path, sandbox: Sandbox) -> dict[str, str]:
    code, document = run_json(
        "plan", str(batch), "--journal", str(journal), "--base-url", sandbox.url
    )
    assert code == 0, document
    return {row["number"]: row["trxid"] for row in document["transactions"]}


def states_by_number(journal: Path, batch_id: str) -> dict[str, str]:
    connection = sqlite3.connect(journal)
    rows = connection.execute(
        "SELECT number, state FROM transactions WHERE batch_id = ?", [batch_id]
    ).fetchall()
    connection.close()
    return dict(rows)


def test_reordered_rows_keep_trxids(sandbox: Sandbox, tmp_path: Path) -> None:
    rows = numbered_rows(12)
    forward = write_csv(tmp_path / "forward.csv", rows)
    backward = write_csv(tmp_path / "backward.csv", list(reversed(rows)))
    journal = tmp_path / "j.sqlite"
    assert plan_trxids(forward, journal, sandbox) == plan_trxids(
        backward, journal, sandbox
    )
    code, first = run_json("run", str(forward), *run_args(sandbox, journal))
    requests = sandbox.ledger()["requests"]
    code_again, again = run_json("run", str(backward), *run_args(sandbox, journal))
    assert code == 0
    assert code_again == 0
    assert again["batch_id"] == first["batch_id"]
    assert sandbox.ledger()["requests"] == requests


def test_other_name_same_day_resumes(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "march.csv", numbered_rows(8))
    journal = tmp_path / "j.sqlite"
    _, first = run_json("run", str(batch), *run_args(sandbox, journal))
    copy = shutil.copy(batch, tmp_path / "march-final-v2.csv")
    requests = sandbox.ledger()["requests"]
    code, again = run_json("run", str(copy), *run_args(sandbox, journal))
    assert code == 0
    assert again["batch_id"] == first["batch_id"]
    assert any("is complete" in message for message in again["messages"])
    assert sandbox.ledger()["requests"] == requests


def test_fixed_file_charges_only_unsent(sandbox: Sandbox, tmp_path: Path) -> None:
    rows = numbered_rows(10)
    rows[4][0] = "017-bad"
    batch = write_csv(tmp_path / "payouts.csv", rows)
    journal = tmp_path / "j.sqlite"
    # Stop the first run halfway: the crash switch kills it after 5 commits.
    first = run_tool(
        "run",
        str(batch),
        "--skip-invalid",
        *run_args(sandbox, journal, "--concurrency", "1"),
        BULK_TOPUP_CRASH_AT="after_answer_before_journal:5",
    )
    assert first.returncode == -9
    charged_before = set(sandbox.charges_per_trxid())
    rows[4][0] = "01719999999"
    write_csv(batch, rows)
    code, result = run_json(
        "run", str(batch), "--skip-invalid", *run_args(sandbox, journal)
    )
    resumed = run_tool(
        "resume", "--base-url", sandbox.url, "--journal", str(journal), "--yes"
    )
    ledger = sandbox.ledger()["charges"]
    numbers = [charge["number"] for charge in ledger]
    assert code in (0, 75), result
    assert resumed.returncode in (0, 75), resumed.stderr
    assert len(charged_before) >= 4
    assert sorted(numbers) == sorted(set(numbers))
    assert set(numbers) == {row[0] for row in rows}


def test_same_rows_other_batch_id_repeat(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(6))
    journal = tmp_path / "j.sqlite"
    run_json("run", str(batch), *run_args(sandbox, journal))
    requests = sandbox.ledger()["requests"]
    code, again = run_json(
        "run", str(batch), "--batch-id", "again", *run_args(sandbox, journal)
    )
    assert code == 0, again
    assert again["summary"]["counts"] == {"repeat": 6}
    assert sandbox.ledger()["requests"] == requests


def test_same_rows_next_day_repeat(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(6))
    journal = tmp_path / "j.sqlite"
    run_json("run", str(batch), *run_args(sandbox, journal))
    requests = sandbox.ledger()["requests"]
    tomorrow = datetime.now(DHAKA) + timedelta(days=1)
    with Journal.open(journal) as opened:
        validation = validate_table(read_batch(batch))
        planned = plan_batch(
            opened, validation, target=sandbox.url, options=PlanOptions(), now=tomorrow
        )
    assert planned.created
    code, resumed = run_json(
        "resume",
        planned.batch.batch_id,
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
    )
    assert code == 0, resumed
    assert resumed["summary"]["counts"] == {"repeat": 6}
    assert sandbox.ledger()["requests"] == requests


def test_split_above_sums_to_amount(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", [["01711000001", "GP", "prepaid", "2500"]])
    journal = tmp_path / "j.sqlite"
    code, result = run_json(
        "run", str(batch), "--split-above", "1000", *run_args(sandbox, journal)
    )
    amounts = [int(charge["amount"]) for charge in sandbox.ledger()["charges"]]
    assert code == 0, result
    assert sum(amounts) == 2500
    assert len(amounts) == 3
    assert min(amounts) >= 9
    assert max(amounts) - min(amounts) <= 1


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("HTTP://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:08080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/api/..", "http://127.0.0.1:8080"),
        ("https://API.example.test:443/v1/", "https://api.example.test/v1"),
    ],
    ids=["case-slash", "port-zero", "dot-segment", "default-port"],
)
def test_base_url_spellings_one_target(spelling: str, canonical: str) -> None:
    assert normalise_base_url(spelling) == canonical


@pytest.mark.parametrize("url", ["notaurl", "ftp://host", "http://"])
def test_unusable_base_url_is_usage_error(url: str, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1))
    result = run_tool(
        "run",
        str(batch),
        "--base-url",
        url,
        "--yes",
        "--journal",
        str(tmp_path / "j.sqlite"),
    )
    assert result.returncode == 2
    assert "Invalid base URL" in result.stderr


def test_other_url_spelling_sends_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(3))
    journal = tmp_path / "j.sqlite"
    run_json("run", str(batch), *run_args(sandbox, journal))
    shouted = sandbox.url.replace("http://", "HTTP://") + "/"
    code, again = run_json(
        "run", str(batch), "--base-url", shouted, "--journal", str(journal), "--yes"
    )
    assert code == 0, again
    assert len(sandbox.charges_per_trxid()) == 3
    assert sandbox.ledger()["requests_by_path"]["/api/recharge"] == 3


def test_split_change_is_repeat(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", [["01711000001", "GP", "prepaid", "1200"]])
    journal = tmp_path / "j.sqlite"
    run_json("run", str(batch), "--split-above", "500", *run_args(sandbox, journal))
    code, unsplit = run_json(
        "run", str(batch), "--batch-id", "b2", *run_args(sandbox, journal)
    )
    _, resplit = run_json(
        "run",
        str(batch),
        "--batch-id",
        "b3",
        "--split-above",
        "300",
        *run_args(sandbox, journal),
    )
    amounts = [int(charge["amount"]) for charge in sandbox.ledger()["charges"]]
    assert code == 0
    assert unsplit["summary"]["counts"] == {"repeat": 1}
    assert resplit["summary"]["counts"] == {"repeat": 4}
    assert sum(amounts) == 1200
