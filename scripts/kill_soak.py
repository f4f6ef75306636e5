"""Kill a real ``bulk-topup run`` with SIGKILL again and again, then check it.

A sandbox process that fails a share of requests after charging them (HTTP
503, or a dropped connection) serves a batch of distinct numbers. It charges
a repeated trxid again (``--no-dedupe``), so a blind re-send shows up as a
double charge. The tool runs as a real process, ``run`` on the file again or
``resume``, and is killed with SIGKILL at a random moment, as many times as
asked. A final ``resume`` finishes the batch. The summary counts the trxids
that the sandbox charged more than once, the rows left in a state that does
not explain them, the journal's ``PRAGMA integrity_check`` and the elapsed
time.

    python scripts/kill_soak.py --rows 10000 --kills 50

Each process is killed once it has started a random number of new attempts
(1 to twice rows / kills, read from its journal), so the kills spread over the
whole batch whatever the speed of the machine. A process that reaches no such
number, because the batch is all sent, is killed after ``--max-wait`` seconds
while it settles. ``states_before_final`` shows what the kills left behind.

The process exits 0 when nothing was charged twice, every row is final or in
``review``, the charged rows are exactly the ``success`` rows and the journal
is intact, and 1 otherwise. ``tests/test_kills.py`` runs the same soak with
smaller numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

# States that explain a row for good, and `review`, which a person settles.
EXPLAINED_STATES = frozenset(
    {"success", "cancelled", "failed", "review", "invalid", "duplicate", "repeat"}
)
TOOL_VARIABLE_PREFIXES = ("STU_", "BULK_TOPUP_")


@dataclass(frozen=True)
class SoakSettings:
    """Size and pace of a soak: rows, kills, request rate, delays in seconds."""

    rows: int = 2000
    kills: int = 20
    seed: int = 1
    rate: float = 400.0
    concurrency: int = 16
    max_wait: float = 30.0
    fault_rate: float = 0.01
    settle_timeout: float = 120.0


@dataclass
class SoakResult:
    """Findings of a soak, every field of which is printed in the summary."""

    rows: int
    kills: int
    kills_landed: int
    final_exit_code: int
    double_charges: dict[str, int]
    states: dict[str, int]
    unexplained: dict[str, str]
    charged_not_success: list[str]
    success_not_charged: list[str]
    integrity: str
    elapsed_seconds: float
    run_exit_codes: dict[str, int] = field(default_factory=dict)
    states_before_final: dict[str, int] = field(default_factory=dict)

    @property
    def is_clean(self) -> bool:
        """Whether no money rule was broken and the journal is intact."""
        return (
            not self.double_charges
            and not self.unexplained
            and not self.charged_not_success
            and not self.success_not_charged
            and self.integrity == "ok"
        )


def write_batch(path: Path, rows: int) -> Path:
    """Write a recharge batch of distinct Grameenphone numbers as CSV."""
    lines = ["number,operator,type,amount"]
    lines.extend(
        f"0171{index:07d},GP,prepaid,{10 + index % 50}" for index in range(rows)
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tool_environment(workdir: Path) -> dict[str, str]:
    """Return an environment that keeps the tool away from the user's settings."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(TOOL_VARIABLE_PREFIXES)
    }
    environment.update(
        STU_KEY="soak-key",
        STU_SECRET="soak-secret",
        # A config path that does not exist reads as an empty config.
        BULK_TOPUP_CONFIG=str(workdir / "no-config.toml"),
        BULK_TOPUP_SETTLE_INTERVAL="0.1",
        # The sandbox responds at once, so a trxid that status has not seen
        # one second after its attempt started was never received.
        BULK_TOPUP_GRACE_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    return environment


def start_sandbox(
    settings: SoakSettings, environment: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    """Start the sandbox with after-charge faults and return it and its URL."""
    rate = str(settings.fault_rate)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulk_topup.sandbox",
            "--port",
            "0",
            "--no-dedupe",
            "--seed",
            str(settings.seed),
            "--processing-seconds",
            "0.2",
            "--fault",
            f"5xx-after-charge={rate}",
            "--fault",
            f"drop-after-charge={rate}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"the sandbox did not start: {line!r}")
    return process, line.removeprefix("listening on ")


def tool_command(
    command: str, batch: Path, journal: Path, url: str, settings: SoakSettings
) -> list[str]:
    """Return the command line of ``run FILE`` or ``resume``."""
    arguments = [sys.executable, "-m", "bulk_topup", command]
    if command == "run":
        arguments.append(str(batch))
    arguments += [
        "--base-url",
        url,
        "--journal",
        str(journal),
        "--yes",
        "--rate",
        str(settings.rate),
        "--concurrency",
        str(settings.concurrency),
        "--settle-timeout",
        str(settings.settle_timeout),
        "--report",
        str(journal.with_name("report.csv")),
    ]
    return arguments


def count_attempts(journal: Path) -> int:
    """Return how many attempts the journal records, 0 before it has any."""
    if not journal.exists():
        return 0
    connection = sqlite3.connect(journal)
    try:
        return int(connection.execute("SELECT count(*) FROM attempts").fetchone()[0])
    except sqlite3.OperationalError:
        # A process killed before the journal's first migration left no table.
        return 0
    finally:
        connection.close()


def kill_at_attempts(
    process: subprocess.Popen[str], journal: Path, target: int, max_wait: float
) -> bool:
    """SIGKILL the process once the journal records target attempts in all.

    Kills it after max_wait seconds if it falls short. Returns whether the
    process was still running when the kill came.
    """
    deadline = time.monotonic() + max_wait
    while process.poll() is None and time.monotonic() < deadline:
        if count_attempts(journal) >= target:
            break
        time.sleep(0.02)
    landed = process.poll() is None
    if landed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return landed


def read_states(journal: Path) -> dict[str, str]:
    """Return the state of every transaction in the journal."""
    connection = sqlite3.connect(journal)
    try:
        return dict(connection.execute("SELECT trxid, state FROM transactions"))
    finally:
        connection.close()


def check_integrity(journal: Path) -> str:
    """Return the result of SQLite's integrity check of the journal."""
    connection = sqlite3.connect(journal)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def fetch_charges(url: str) -> Counter[str]:
    """Return how many times the sandbox charged each trxid."""
    ledger = httpx.get(url + "/sandbox/ledger", timeout=30).json()
    return Counter(charge["trxid"] for charge in ledger["charges"])


def run_soak(settings: SoakSettings, workdir: Path) -> SoakResult:
    """Run, kill and resume the tool as settings set out, and return the findings."""
    started = time.monotonic()
    environment = tool_environment(workdir)
    batch = write_batch(workdir / "soak.csv", settings.rows)
    journal = workdir / "journal.sqlite"
    sandbox, url = start_sandbox(settings, environment)
    try:
        landed, exit_codes = _kill_repeatedly(
            settings, batch, journal, url, environment, workdir
        )
        states_before_final: Counter[str] = Counter()
        if _has_batch(journal):
            states_before_final.update(read_states(journal).values())
        final = subprocess.run(
            tool_command("resume", batch, journal, url, settings),
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "final-resume.log").open("w"),
            env=environment,
            cwd=workdir,
            timeout=settings.settle_timeout + 600,
            check=False,
        )
        charges = fetch_charges(url)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    result = _judge(
        settings, journal, charges, landed, exit_codes, final.returncode, started
    )
    result.states_before_final = dict(sorted(states_before_final.items()))
    return result


def _kill_repeatedly(
    settings: SoakSettings,
    batch: Path,
    journal: Path,
    url: str,
    environment: dict[str, str],
    workdir: Path,
) -> tuple[int, dict[str, int]]:
    draws = random.Random(settings.seed)
    landed = 0
    exit_codes: Counter[str] = Counter()
    for number in range(settings.kills):
        # `resume` needs a planned batch. Once there is one, either command
        # resumes it.
        planned = _has_batch(journal)
        command = "resume" if planned and draws.random() < 0.5 else "run"
        target = count_attempts(journal) + draws.randint(
            1, max(1, 2 * settings.rows // settings.kills)
        )
        log = (workdir / f"run-{number:03d}.log").open("w")
        process = subprocess.Popen(
            tool_command(command, batch, journal, url, settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env=environment,
            cwd=workdir,
        )
        landed += kill_at_attempts(process, journal, target, settings.max_wait)
        log.close()
        exit_codes[str(process.returncode)] += 1
    return landed, dict(exit_codes)


def _has_batch(journal: Path) -> bool:
    if not journal.exists():
        return False
    connection = sqlite3.connect(journal)
    try:
        return bool(connection.execute("SELECT count(*) FROM batches").fetchone()[0])
    except sqlite3.OperationalError:
        # A process killed before the journal's first migration left no table.
        return False
    finally:
        connection.close()


def _judge(
    settings: SoakSettings,
    journal: Path,
    charges: Counter[str],
    landed: int,
    exit_codes: dict[str, int],
    final_exit_code: int,
    started: float,
) -> SoakResult:
    states = read_states(journal)
    success = {trxid for trxid, state in states.items() if state == "success"}
    return SoakResult(
        rows=settings.rows,
        kills=settings.kills,
        kills_landed=landed,
        final_exit_code=final_exit_code,
        double_charges={trxid: n for trxid, n in charges.items() if n > 1},
        states=dict(sorted(Counter(states.values()).items())),
        unexplained={
            trxid: state
            for trxid, state in states.items()
            if state not in EXPLAINED_STATES
        },
        charged_not_success=sorted(set(charges) - success),
        success_not_charged=sorted(success - set(charges)),
        integrity=check_integrity(journal),
        elapsed_seconds=round(time.monotonic() - started, 1),
        run_exit_codes=exit_codes,
    )


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = SoakSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=defaults.rows)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="requests per second"
    )
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument(
        "--max-wait",
        type=float,
        default=defaults.max_wait,
        help="seconds a run lives before its SIGKILL when it starts too few attempts",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the journal, batch and logs here (default: a temporary folder)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one soak from the command line and print its summary as JSON."""
    arguments = _parse_arguments(argv)
    settings = SoakSettings(
        rows=arguments.rows,
        kills=arguments.kills,
        seed=arguments.seed,
        rate=arguments.rate,
        concurrency=arguments.concurrency,
        max_wait=arguments.max_wait,
    )
    if arguments.workdir is not None:
        arguments.workdir.mkdir(parents=True, exist_ok=True)
        result = run_soak(settings, arguments.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="kill-soak-") as folder:
            result = run_soak(settings, Path(folder))
    summary: dict[str, Any] = asdict(result)
    summary["clean"] = result.is_clean
    print(json.dumps(summary, indent=2))
    return 0 if result.is_clean else 1


if __name__ == "__main__":
    sys.exit(main())
