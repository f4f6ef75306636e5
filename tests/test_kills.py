"""Signals and the journal lock: SIGKILL at random, a second run, Ctrl-C.

The tool runs as a real process against a sandbox process. Every test checks
the sandbox's ledger for trxids charged twice, and the journal for rows left
in a state that does not explain them.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest
from conftest import (
    Sandbox,
    numbered_rows,
    run_json,
    run_tool,
    tool_environment,
    write_csv,
)

SOAK_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kill_soak.py"


def load_kill_soak() -> ModuleType:
    """Import scripts/kill_soak.py, which is not part of the package."""
    spec = importlib.util.spec_from_file_location("kill_soak", SOAK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up by name while it builds the classes.
    sys.modules["kill_soak"] = module
    spec.loader.exec_module(module)
    return module


def start_run(
    sandbox: Sandbox, batch: Path, journal: Path, *extra: str
) -> subprocess.Popen[str]:
    """Start ``run`` as a background process."""
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
        stderr=subprocess.DEVNULL,
        text=True,
        env=tool_environment(),
    )


def resume(sandbox: Sandbox, journal: Path) -> tuple[int, dict[str, object]]:
    """Resume the journal's batch to the end and return the JSON result."""
    return run_json(
        "resume",
        "--base-url",
        sandbox.url,
        "--journal",
        str(journal),
        "--yes",
        "--rate",
        "200",
        "--settle-timeout",
        "30",
    )


def states(journal: Path) -> dict[str, str]:
    """Return the state of every transaction by trxid."""
    connection = sqlite3.connect(journal)
    rows = dict(connection.execute("SELECT trxid, state FROM transactions"))
    connection.close()
    return rows


def trxids_in(journal: Path, *names: str) -> set[str]:
    """Return the trxids of the rows in any of the named states."""
    return {trxid for trxid, state in states(journal).items() if state in names}


def integrity(journal: Path) -> str:
    """Return SQLite's integrity check of the journal."""
    connection = sqlite3.connect(journal)
    result = connection.execute("PRAGMA integrity_check").fetchone()[0]
    connection.close()
    return str(result)


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Poll condition every 50 ms until it holds, and fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


# About 45 s alone on 2 cores, and over a minute beside other test runs.
@pytest.mark.slow
def test_random_kills_charge_once(tmp_path: Path) -> None:
    kill_soak = load_kill_soak()
    settings = kill_soak.SoakSettings(rows=2000, kills=20, seed=1)
    result = kill_soak.run_soak(settings, tmp_path)

    assert result.double_charges == {}
    assert result.unexplained == {}
    assert result.charged_not_success == []
    assert result.success_not_charged == []
    assert result.integrity == "ok"
    assert result.kills_landed >= 15
    assert result.final_exit_code in (0, 75)


def test_second_run_locked_names_pid(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory("--seed", "22", "--processing-seconds", "0.1")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(100))
    journal = tmp_path / "journal.sqlite"
    lock = journal.with_name(journal.name + ".lock")
    first = start_run(sandbox, batch, journal, "--rate", "5")
    wait_until(lambda: lock.exists() and f"pid {first.pid}" in lock.read_text())
    started = time.monotonic()
    second = run_tool(
        "run", str(batch), "--base-url", sandbox.url, "--journal", str(journal), "--yes"
    )
    elapsed = time.monotonic() - started
    first_still_running = first.poll() is None
    if first_still_running:
        os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    code, result = resume(sandbox, journal)

    assert second.returncode == 75
    assert f"pid {first.pid}" in second.stderr
    assert first_still_running
    assert elapsed < 20
    assert "error" not in result
    assert code in (0, 75), result
    assert max(sandbox.charges_per_trxid().values()) == 1


def test_ctrl_c_finishes_in_flight(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # Every response takes 150 ms, so requests are in flight at the signal.
    sandbox = sandbox_factory(
        "--seed", "23", "--processing-seconds", "0.1", "--latency-ms", "150"
    )
    batch = write_csv(tmp_path / "b.csv", numbered_rows(60))
    journal = tmp_path / "journal.sqlite"
    process = start_run(sandbox, batch, journal, "--rate", "20", "--concurrency", "4")
    wait_until(lambda: len(sandbox.ledger()["charges"]) >= 8)
    process.send_signal(signal.SIGINT)
    interrupted_at = time.time()
    process.wait(timeout=60)
    arrivals = [
        datetime.fromisoformat(entry["at"]).timestamp()
        for entry in sandbox.requests()
        if entry["path"].startswith("/api/")
    ]
    # Rows already committed as `sending` (at most 50 ms ahead) still go out.
    late = [at for at in arrivals if at > interrupted_at + 0.25]
    charged = set(sandbox.charges_per_trxid())

    assert process.returncode == 130
    assert late == []
    assert trxids_in(journal, "sending", "unknown") == set()
    assert charged == trxids_in(journal, "processing", "success")
    assert len(trxids_in(journal, "planned")) > 30
    assert integrity(journal) == "ok"

    code, result = resume(sandbox, journal)
    charges = sandbox.charges_per_trxid()

    assert code == 0, result
    assert max(charges.values()) == 1
    assert trxids_in(journal, "success") == set(states(journal))
