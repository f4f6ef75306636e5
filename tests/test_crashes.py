"""Crash tests: a real `run` process killed with SIGKILL, then resumed.

Every test checks the sandbox's ledger: no trxid charged twice, and every
row ends in a state that explains it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Sandbox, numbered_rows, run_tool, tool_environment, write_csv

from bulk_topup.crashpoints import POINTS

EXPLAINED = {
    "success",
    "cancelled",
    "failed",
    "review",
    "invalid",
    "duplicate",
    "repeat",
}


def states(journal: Path) -> dict[str, str]:
    connection = sqlite3.connect(journal)
    rows = dict(connection.execute("SELECT trxid, state FROM transactions"))
    connection.close()
    return rows


def integrity(journal: Path) -> str:
    connection = sqlite3.connect(journal)
    result = connection.execute("PRAGMA integrity_check").fetchone()[0]
    connection.close()
    return str(result)


def start_run(
    batch: Path, sandbox: Sandbox, journal: Path, *extra: str, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulk_topup",
            "run",
            str(batch),
            "--base-url",
            sandbox.url,
            "--journal",
            str(journal),
            "--yes",
            "--settle-timeout",
            "30",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_environment(**env),
    )


def resume(
    sandbox: Sandbox, journal: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_tool(
        "resume",
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
        "--settle-timeout",
        "30",
        "--rate",
        "500",
        "--concurrency",
        "16",
        *extra,
        timeout=300,
    )


def assert_charged_once(sandbox: Sandbox) -> None:
    charges = sandbox.charges_per_trxid()
    doubled = {trxid: count for trxid, count in charges.items() if count > 1}
    assert doubled == {}


def assert_explained(journal: Path) -> None:
    unexplained = {t: s for t, s in states(journal).items() if s not in EXPLAINED}
    assert unexplained == {}


def kill_after(process: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_kills_then_resume_charge_once(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(
        "--processing-seconds", "0.3", "--latency-ms", "5", "--seed", "3"
    )
    batch = write_csv(tmp_path / "b.csv", numbered_rows(400))
    journal = tmp_path / "journal.sqlite"
    for delay in (0.8, 1.1, 1.4, 1.7, 2.0, 2.6):
        process = start_run(
            batch, sandbox, journal, "--rate", "150", "--concurrency", "8"
        )
        kill_after(process, delay)
    result = resume(sandbox, journal)
    assert result.returncode in (0, 75), result.stderr
    assert_charged_once(sandbox)
    assert_explained(journal)
    assert integrity(journal) == "ok"
    charged = set(sandbox.charges_per_trxid())
    succeeded = {t for t, s in states(journal).items() if s == "success"}
    assert succeeded <= charged


# How many times a point is passed before the crash: the steps that run
# once per run crash on the first pass, the per-row steps mid-batch.
HITS = {
    "after_planning": 1,
    "after_sending_committed": 5,
    "after_request_written": 5,
    "after_answer_before_journal": 5,
    "while_settling": 5,
    "while_writing_report": 1,
}


def test_every_crash_point_is_tested() -> None:
    assert set(HITS) == set(POINTS)


@pytest.mark.parametrize("point", POINTS, ids=list(POINTS))
def test_crash_point_then_resume(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, point: str
) -> None:
    sandbox = sandbox_factory("--processing-seconds", "0.2", "--seed", "4")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(30))
    journal = tmp_path / "journal.sqlite"
    process = start_run(
        batch,
        sandbox,
        journal,
        "--rate",
        "100",
        "--report",
        str(tmp_path / "r.csv"),
        BULK_TOPUP_CRASH_AT=f"{point}:{HITS[point]}",
    )
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL
    result = resume(sandbox, journal)
    assert result.returncode in (0, 75), result.stderr
    assert_charged_once(sandbox)
    assert_explained(journal)
    final = states(journal)
    charged = set(sandbox.charges_per_trxid())
    succeeded = {t for t, s in final.items() if s == "success"}
    assert succeeded == charged


def test_slow_rate_commits_little_ahead(sandbox: Sandbox, tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(40))
    journal = tmp_path / "journal.sqlite"
    process = start_run(batch, sandbox, journal, "--rate", "4", "--concurrency", "50")
    kill_after(process, 2.5)
    in_sending = [t for t, s in states(journal).items() if s == "sending"]
    requested = len(sandbox.requests())
    assert process.returncode == -signal.SIGKILL
    assert requested >= 3
    assert len(in_sending) <= 2
