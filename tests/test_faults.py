"""Fault tests: the tool as a real process against a faulty sandbox process.

Every test reads what reached the sandbox (``GET /sandbox/requests``) and what
it charged (``GET /sandbox/ledger``), and compares them with the journal: no
trxid charged twice, no ambiguous row sent again blindly, halts that leave the
unsent rows ``held`` for ``resume``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    KEY,
    SECRET,
    Sandbox,
    numbered_rows,
    run_json,
    run_tool,
    tool_environment,
    write_csv,
)

from bulk_topup.client import Credentials, Timeouts, TopupClient
from bulk_topup.journal import Journal
from bulk_topup.limiter import RateLimiter
from bulk_topup.models import State
from bulk_topup.sandbox.faults import FAULT_NAMES, Draws, pick_fault
from bulk_topup.sender import Sender, SendSettings
from bulk_topup.settling import Settler, SettleSettings

ALL_FAULTS = tuple((name, 0.05) for name in FAULT_NAMES)
FAULT_SEED = 7


def run_batch(
    url: str, batch: Path, journal: Path, *extra: str, **env: str
) -> tuple[int, dict[str, Any]]:
    """Run a batch to the end with ``--json`` and return its exit code and result."""
    return run_json(
        "run",
        str(batch),
        "--base-url",
        url,
        "--journal",
        str(journal),
        "--yes",
        "--settle-timeout",
        "30",
        *extra,
        **env,
    )


def resume_batch(url: str, journal: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """Resume the journal's last batch with ``--json``."""
    return run_json(
        "resume",
        "--base-url",
        url,
        "--journal",
        str(journal),
        "--yes",
        "--settle-timeout",
        "30",
        "--rate",
        "200",
        *extra,
    )


def start_run(
    url: str, batch: Path, journal: Path, *extra: str
) -> subprocess.Popen[str]:
    """Start ``run`` as a background process that prints its result as JSON."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulk_topup",
            "run",
            str(batch),
            "--base-url",
            url,
            "--journal",
            str(journal),
            "--yes",
            "--settle-timeout",
            "30",
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_environment(),
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    """Wait for a background run and return its exit code and JSON result."""
    stdout, stderr = process.communicate(timeout=120)
    try:
        return process.returncode, json.loads(stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"no JSON result: {stdout!r} {stderr!r}") from error


def journal_rows(journal: Path) -> dict[str, dict[str, Any]]:
    """Return every transaction of the journal by trxid."""
    connection = sqlite3.connect(journal)
    connection.row_factory = sqlite3.Row
    rows = connection.execute("SELECT * FROM transactions").fetchall()
    connection.close()
    return {row["trxid"]: dict(row) for row in rows}


def trxids_in(journal: Path, *states: str) -> set[str]:
    """Return the trxids of the journal's rows in any of the states."""
    rows = journal_rows(journal).values()
    return {row["trxid"] for row in rows if row["state"] in states}


def attempt_outcomes(journal: Path) -> dict[str, list[str | None]]:
    """Return the outcome of every recharge attempt, by trxid, oldest first."""
    connection = sqlite3.connect(journal)
    rows = connection.execute(
        "SELECT trxid, outcome FROM attempts WHERE call = 'recharge' ORDER BY id"
    ).fetchall()
    connection.close()
    outcomes: dict[str, list[str | None]] = {}
    for trxid, outcome in rows:
        outcomes.setdefault(trxid, []).append(outcome)
    return outcomes


def received(sandbox: Sandbox, path: str | None = None) -> list[dict[str, Any]]:
    """Return the API requests that reached the sandbox, with ``at`` in seconds."""
    entries = []
    for entry in sandbox.requests():
        if not entry["path"].startswith("/api/"):
            continue
        if path is not None and entry["path"] != path:
            continue
        at = datetime.fromisoformat(entry["at"]).timestamp()
        entries.append({**entry, "at": at})
    return entries


def max_in_one_second(times: list[float]) -> int:
    """Return the max number of starts in any half-open window [t, t + 1)."""
    ordered = sorted(times)
    max_count = 0
    end = 0
    for start_index, start in enumerate(ordered):
        while end < len(ordered) and ordered[end] < start + 1.0:
            end += 1
        max_count = max(max_count, end - start_index)
    return max_count


def faulted_requests(
    requests: list[dict[str, Any]], faults: tuple[tuple[str, float], ...], seed: int
) -> list[tuple[dict[str, Any], str | None]]:
    """Pair each recharge request with the fault the seeded sandbox drew for it.

    The sandbox draws a request's fault from the seed, the trxid and how many
    requests with that trxid came before it, so the test can draw it again.
    """
    draws = Draws(seed)
    seen: Counter[str] = Counter()
    paired = []
    for entry in requests:
        key = f"/api/recharge {entry['trxid']}"
        draw = draws.draw("fault", key, str(seen[key]))
        seen[key] += 1
        paired.append((entry, pick_fault(faults, draw)))
    return paired


def is_seen_by_status(sandbox: Sandbox, trxid: str) -> bool:
    """Return whether the sandbox's status call finds the trxid."""
    answer = httpx.post(
        sandbox.url + "/api/status",
        json={"successtopup_key": KEY, "successtopup_secret": SECRET, "trxid": trxid},
        timeout=10,
    ).json()
    return bool(answer["result"])


def free_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Poll condition every 50 ms until it holds, and fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


# Every fault at once, with a sandbox that charges a repeated trxid again.


def test_all_faults_never_charge_twice(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    fault_options = [f"--fault={name}={rate}" for name, rate in ALL_FAULTS]
    sandbox = sandbox_factory(
        "--no-dedupe",
        "--seed",
        str(FAULT_SEED),
        "--processing-seconds",
        "0.2",
        "--slow-seconds",
        "0.3",
        "--status-lag-seconds",
        "1",
        "--retry-after",
        "0.2",
        *fault_options,
    )
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1000))
    journal = tmp_path / "journal.sqlite"
    speed = ("--rate", "400", "--concurrency", "16")
    code, result = run_batch(sandbox.url, batch, journal, *speed)
    # With 30% of requests failing, the breaker may pause the operator, so
    # each resume sends the held rows in a new process.
    for _ in range(10):
        if result["reason"] != "operator_paused":
            break
        code, result = resume_batch(sandbox.url, journal, *speed)
    ledger = sandbox.ledger()
    charges = Counter(charge["trxid"] for charge in ledger["charges"])
    succeeded = {c["trxid"] for c in ledger["charges"] if c["status"] == "Success"}
    review = trxids_in(journal, "review")
    paired = faulted_requests(
        received(sandbox, "/api/recharge"), ALL_FAULTS, FAULT_SEED
    )
    last_request = {entry["trxid"]: index for index, (entry, _) in enumerate(paired)}
    # Only a 429 proves that a request was not acted on, so every other
    # request must be the last one its trxid sent.
    resent_after = Counter(
        fault
        for index, (entry, fault) in enumerate(paired)
        if index != last_request[entry["trxid"]]
    )

    assert code == 75, result
    assert {trxid: n for trxid, n in charges.items() if n > 1} == {}
    assert trxids_in(journal, "success") == succeeded
    assert trxids_in(journal, "sending", "unknown", "processing", "held") == set()
    assert len(review) > 0
    assert [t for t in review if t in charges and is_seen_by_status(sandbox, t)] == []
    assert set(resent_after) == {"429"}


def planned_journal(path: Path, target: str, count: int) -> Journal:
    """Return a journal holding one batch of count planned rows for target."""
    journal = Journal.open(path)
    rows = [
        {
            "trxid": f"BKSLOW{index:04d}",
            "batch_id": "slow",
            "seq": index + 1,
            "source_row": index + 2,
            "part": 1,
            "parts": 1,
            "generation": 1,
            "occurrence": 1,
            "row_key": f"0171100000{index}|GP|prepaid|50||1/1",
            "number": f"0171100000{index}",
            "operator": "GP",
            "type": "prepaid",
            "amount": 50,
            "state": State.PLANNED,
        }
        for index in range(count)
    ]
    batch = {
        "batch_id": "slow",
        "target": target,
        "kind": "recharge",
        "file": "slow.csv",
        "file_name": "slow.csv",
        "day": "20261204",
        "fingerprint": "f" * 64,
        "explicit_id": True,
        "options": {},
    }
    journal.insert_batch(batch, rows)
    return journal


async def send_and_settle(journal: Journal, url: str, read_timeout: float) -> None:
    """Send the journal's planned rows, then settle them, as ``run`` does."""
    client = TopupClient(
        url, Credentials(KEY, SECRET), timeouts=Timeouts(read=read_timeout)
    )
    limiter = RateLimiter(50)
    sender = Sender(journal, client, limiter, SendSettings(), target=url)
    settler = Settler(
        journal, client, limiter, SettleSettings(timeout=20, first_interval=0.1)
    )
    try:
        await sender.send(journal.transactions("slow", [State.PLANNED]))
        await settler.settle([tx.trxid for tx in journal.transactions("slow")])
    finally:
        await client.aclose()


def test_read_timeout_settled_by_status(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # The command line has no option for the read timeout, so this test
    # drives the sender and settler in-process against the sandbox process.
    sandbox = sandbox_factory(
        "--no-dedupe",
        "--processing-seconds",
        "0.1",
        "--slow-seconds",
        "1",
        "--fault",
        "slow-after-charge=1",
    )
    journal = planned_journal(tmp_path / "journal.sqlite", sandbox.url, 4)
    asyncio.run(send_and_settle(journal, sandbox.url, read_timeout=0.3))
    outcomes = {
        tx.trxid: [row["outcome"] for row in journal.attempts(tx.trxid)]
        for tx in journal.transactions("slow")
    }
    states = {tx.trxid: tx.state for tx in journal.transactions("slow")}
    journal.close()
    charges = sandbox.charges_per_trxid()

    assert list(outcomes.values()) == [["ambiguous"]] * 4
    assert set(states.values()) == {State.SUCCESS}
    assert charges == Counter(list(states))


# Retry-After, outages and the rate limit.


def test_retry_after_pauses_every_request(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # About 10 of 100 rows meet a 429; fewer than 2 has odds near 1 in 3,000.
    faults = (("429", 0.1),)
    retry_after = 0.6
    sandbox = sandbox_factory(
        "--seed",
        "11",
        "--processing-seconds",
        "0.1",
        "--retry-after",
        str(retry_after),
        "--fault=429=0.1",
    )
    batch = write_csv(tmp_path / "b.csv", numbered_rows(100))
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(
        sandbox.url, batch, journal, "--rate", "25", "--concurrency", "4"
    )
    requests = received(sandbox)
    recharges = [entry for entry in requests if entry["path"] == "/api/recharge"]
    limited = [
        entry["at"]
        for entry, fault in faulted_requests(recharges, faults, 11)
        if fault == "429"
    ]
    # A request already sent when the 429 reached the client may land just
    # after it. 100 ms is 2.5 times the spacing of requests at this rate.
    in_flight = 0.1
    early = [
        (entry["path"], round(entry["at"] - moment, 3))
        for moment in limited
        for entry in requests
        if moment + in_flight < entry["at"] < moment + retry_after
    ]

    assert code == 0, result
    assert len(limited) >= 2
    assert early == []
    assert max_in_one_second([entry["at"] for entry in requests]) <= 25


@pytest.mark.parametrize("rate", [20, 100], ids=["20", "100"])
def test_rate_holds_in_every_second(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, rate: int
) -> None:
    sandbox = sandbox_factory("--seed", "12", "--processing-seconds", "0.1")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(5 * rate))
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(
        sandbox.url, batch, journal, "--rate", str(rate), "--concurrency", "16"
    )
    times = [entry["at"] for entry in received(sandbox)]

    assert code == 0, result
    assert len(times) >= 10 * rate
    assert max_in_one_second(times) <= rate


def test_outage_from_start_holds_every_row(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(5))
    journal = tmp_path / "journal.sqlite"
    url = f"http://127.0.0.1:{free_port()}"
    completed = run_tool(
        "run",
        str(batch),
        "--base-url",
        url,
        "--journal",
        str(journal),
        "--yes",
        "--json",
    )
    result = json.loads(completed.stdout)

    assert completed.returncode == 69, result
    assert result["reason"] == "outage"
    assert result["summary"]["counts"] == {"held": 5}
    assert completed.stderr.count("retrying the balance check") == 4


def test_outage_mid_batch_leaves_rows_open(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    ledger_file = tmp_path / "ledger.sqlite"
    options = ("--seed", "13", "--processing-seconds", "0.1", "--state")
    sandbox = sandbox_factory(*options, str(ledger_file))
    batch = write_csv(tmp_path / "b.csv", numbered_rows(200))
    journal = tmp_path / "journal.sqlite"
    process = start_run(sandbox.url, batch, journal, "--rate", "20")
    wait_until(lambda: len(sandbox.ledger()["charges"]) >= 20)
    sandbox.stop()
    started = time.monotonic()
    code, result = finish(process)
    elapsed = time.monotonic() - started
    port = sandbox.url.rsplit(":", 1)[1]
    restarted = sandbox_factory(*options, str(ledger_file), "--port", port)
    charged_before = set(restarted.charges_per_trxid())
    rows = journal_rows(journal)
    outcomes = attempt_outcomes(journal)
    unreached = {
        trxid
        for trxid, attempts in outcomes.items()
        if attempts and all(outcome == "not_sent" for outcome in attempts)
    }
    retried = [trxid for trxid in unreached if len(outcomes[trxid]) > 1]
    states = Counter(row["state"] for row in rows.values())

    assert code == 69, result
    assert result["reason"] == "outage"
    # The retries end within about 12 s; polling status would last 30 s more.
    assert elapsed < 25
    assert states["failed"] == 0
    assert states["held"] > 0
    assert len(retried) > 0
    assert {rows[trxid]["state"] for trxid in unreached} == {"unknown"}
    assert unreached & charged_before == set()

    code, result = resume_batch(restarted.url, journal)
    charges = restarted.charges_per_trxid()

    assert code in (0, 75), result
    assert max(charges.values()) == 1
    assert trxids_in(journal, "success") == set(charges)


# Balance.


def test_partial_balance_holds_rest(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(
        "--seed", "14", "--processing-seconds", "0.1", "--balance", "600"
    )
    rows = [[f"0171{index:07d}", "GP", "prepaid", "50"] for index in range(30)]
    batch = write_csv(tmp_path / "b.csv", rows)
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(
        sandbox.url, batch, journal, "--allow-partial", "--rate", "100"
    )

    assert code == 69, result
    assert result["summary"]["counts"] == {"success": 12, "held": 18}
    assert result["reason"] == "insufficient_balance"

    sandbox.set_balance(10_000)
    code, result = resume_batch(sandbox.url, journal)
    charges = sandbox.charges_per_trxid()

    assert code == 0, result
    assert result["summary"]["counts"] == {"success": 30}
    assert max(charges.values()) == 1
    assert len(charges) == 30


def test_balance_lowered_mid_run_halts(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory("--seed", "15", "--processing-seconds", "0.1")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(200))
    journal = tmp_path / "journal.sqlite"
    process = start_run(
        sandbox.url, batch, journal, "--rate", "20", "--concurrency", "4"
    )
    wait_until(lambda: len(sandbox.ledger()["charges"]) >= 20)
    sandbox.set_balance(0)
    code, result = finish(process)
    charged = set(sandbox.charges_per_trxid())
    failed = trxids_in(journal, "failed")
    messages = {row["message"] for row in journal_rows(journal).values()}

    assert code == 69, result
    assert result["reason"] == "insufficient_balance"
    assert result["summary"]["counts"]["held"] > 100
    assert failed & charged == set()
    assert "Insufficient balance" in messages

    sandbox.set_balance(100_000)
    code, result = resume_batch(sandbox.url, journal)
    charges = sandbox.charges_per_trxid()

    assert code in (0, 1), result
    assert max(charges.values()) == 1
    assert trxids_in(journal, "success") == set(charges)
    assert trxids_in(journal, "success") | failed == set(journal_rows(journal))


def test_short_balance_stops_before_sending(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory("--seed", "16", "--balance", "100")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(10))
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(sandbox.url, batch, journal)
    paths = sandbox.ledger()["requests_by_path"]

    assert code == 69, result
    assert result["reason"] == "insufficient_balance"
    assert result["summary"]["counts"] == {"held": 10}
    assert "/api/recharge" not in paths
    assert paths["/api/balance"] >= 1


# Classified refusals.


def test_wrong_credentials_hold_every_row(
    sandbox_factory: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STU_KEY", "another-key")
    monkeypatch.setenv("STU_SECRET", "another-secret")
    sandbox = sandbox_factory("--seed", "17")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(10))
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(sandbox.url, batch, journal)

    assert code == 69, result
    assert result["reason"] == "invalid_credentials"
    assert result["summary"]["counts"] == {"held": 10}
    assert "/api/recharge" not in sandbox.ledger()["requests_by_path"]


def test_row_refusal_fails_row(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory("--seed", "18", "--fault", "refuse=1")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(3))
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(sandbox.url, batch, journal)

    assert code == 1, result
    assert result["summary"]["counts"] == {"failed": 3}
    assert sandbox.ledger()["charges"] == []


def test_later_refusal_leaves_row_unknown(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    failing = sandbox_factory("--seed", "19", "--fault", "5xx-before-charge=1")
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1))
    journal = tmp_path / "journal.sqlite"
    code, _ = run_batch(failing.url, batch, journal, "--no-settle")

    assert code == 75

    failing.stop()
    port = failing.url.rsplit(":", 1)[1]
    rejecting = sandbox_factory("--seed", "19", "--fault", "refuse=1", "--port", port)
    # A provider that de-duplicates trxids lets the tool send an unseen row
    # again after the grace period. A refusal of that second attempt proves
    # nothing about whether the first attempt was charged.
    code, result = run_json(
        "resume",
        "--base-url",
        rejecting.url,
        "--journal",
        str(journal),
        "--yes",
        "--settle-timeout",
        "3",
        BULK_TOPUP_PROVIDER_DEDUPES="true",
        BULK_TOPUP_GRACE_SECONDS="0.2",
    )
    outcomes = next(iter(attempt_outcomes(journal).values()))

    assert code == 75, result
    assert result["summary"]["counts"] == {"unknown": 1}
    assert outcomes[0] == "ambiguous"
    assert "row" in outcomes[1:]


# The per-operator circuit breaker, through a proxy that fails one operator.


class OperatorOutageProxy(ThreadingHTTPServer):
    """Proxy to a sandbox that returns HTTP 503 for one operator's recharges."""

    def __init__(self, upstream: str, operator: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.operator = operator
        self.failed: Counter[str] = Counter()

    @property
    def url(self) -> str:
        """Return the proxy's base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: OperatorOutageProxy

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers["Content-Length"]))
        fields = json.loads(body)
        if self.path == "/api/recharge" and fields["operator"] == self.server.operator:
            self.server.failed[fields["trxid"]] += 1
            self._reply(503, b'{"result": false, "message": "Service unavailable"}')
            return
        answer = httpx.post(
            self.server.upstream + self.path,
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        self._reply(answer.status_code, answer.content)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of one line per request."""


@pytest.fixture
def robi_outage(sandbox: Sandbox) -> Iterator[OperatorOutageProxy]:
    """A proxy in front of the sandbox that fails every Robi recharge."""
    proxy = OperatorOutageProxy(sandbox.url, "RB")
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    thread.join(timeout=10)


def test_breaker_holds_failing_operator(
    sandbox: Sandbox, robi_outage: OperatorOutageProxy, tmp_path: Path
) -> None:
    rows = []
    for index in range(40):
        rows.append([f"0171{index:07d}", "GP", "prepaid", "20"])
        rows.append([f"0181{index:07d}", "RB", "prepaid", "20"])
    batch = write_csv(tmp_path / "b.csv", rows)
    journal = tmp_path / "journal.sqlite"
    concurrency = 4
    code, result = run_batch(
        robi_outage.url,
        batch,
        journal,
        "--rate",
        "50",
        "--concurrency",
        str(concurrency),
    )
    by_state: dict[tuple[str, str], int] = Counter(
        (row["operator"], row["state"]) for row in journal_rows(journal).values()
    )
    charged_operators = {c["operator"] for c in sandbox.ledger()["charges"]}

    assert code == 69, result
    assert result["reason"] == "operator_paused"
    assert by_state[("GP", "success")] == 40
    assert by_state[("RB", "held")] >= 40 - 5 - concurrency
    assert len(robi_outage.failed) <= 5 + concurrency
    assert charged_operators == {"GP"}


# The same-number gap.


def test_same_number_gap_spaces_requests(sandbox: Sandbox, tmp_path: Path) -> None:
    gap = 0.5
    # Five numbers with four rows each, then rows of other numbers that keep
    # the limiter busy, so each later row of a number becomes due mid-stream.
    rows = [
        [f"017110000{number:02d}", "GP", "prepaid", str(20 + amount)]
        for amount in range(4)
        for number in range(5)
    ]
    rows += numbered_rows(250, start=1000)
    batch = write_csv(tmp_path / "b.csv", rows)
    journal = tmp_path / "journal.sqlite"
    code, result = run_batch(
        sandbox.url, batch, journal, "--rate", "100", "--same-number-gap", str(gap)
    )
    number_of = {t: row["number"] for t, row in journal_rows(journal).items()}
    starts: dict[str, list[float]] = {}
    for entry in received(sandbox, "/api/recharge"):
        number = number_of[entry["trxid"]]
        if number.startswith("0171100"):
            starts.setdefault(number, []).append(entry["at"])
    spacings = [
        later - earlier
        for times in starts.values()
        for earlier, later in zip(times, times[1:], strict=False)
    ]
    # The sandbox stamps arrivals in whole milliseconds, on its own schedule.
    tolerance = 0.01

    assert code == 0, result
    assert len(spacings) == 15
    assert min(spacings) >= gap - tolerance
