"""Tests of the sandbox over a real loopback server, with httpx as the client."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from bulk_topup.errors import ConfigError
from bulk_topup.sandbox import (
    FAULT_NAMES,
    RunningSandbox,
    SandboxConfig,
    parse_fault,
    start_sandbox,
)
from bulk_topup.sandbox.command import sandbox_serve_command
from bulk_topup.sandbox.faults import pick_fault

CREDENTIALS = {"successtopup_key": "test-key", "successtopup_secret": "test-secret"}
START = 1_800_000_000.0


class FakeClock:
    """A clock that tests move by hand, in Unix seconds."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Client:
    """An httpx client for one sandbox, with helpers that decode its responses."""

    def __init__(self, sandbox: RunningSandbox, timeout: float = 5.0) -> None:
        self.sandbox = sandbox
        self.http = httpx.Client(base_url=sandbox.url, timeout=timeout)

    def post(self, path: str, fields: dict[str, Any]) -> httpx.Response:
        return self.http.post(path, json={**CREDENTIALS, **fields})

    def call(self, path: str, **fields: Any) -> dict[str, Any]:
        return decode(self.post(path, fields))

    def recharge(self, trxid: str, **fields: Any) -> dict[str, Any]:
        return decode(self.post("/api/recharge", recharge_body(trxid, **fields)))

    def status(self, trxid: str) -> dict[str, Any]:
        return self.call("/api/status", trxid=trxid)

    def ledger(self) -> dict[str, Any]:
        return decode(self.http.get("/sandbox/ledger"))

    def charges(self, trxid: str) -> list[dict[str, Any]]:
        charges: list[dict[str, Any]] = self.ledger()["charges"]
        return [charge for charge in charges if charge["trxid"] == trxid]

    def requests(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = decode(self.http.get("/sandbox/requests"))[
            "requests"
        ]
        return entries


def decode(response: httpx.Response) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(response.content, parse_float=Decimal)
    return value


def recharge_body(trxid: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "number": "01712345678",
        "operator": "GP",
        "type": "prepaid",
        "amount": 50,
        "trxid": trxid,
    }
    body.update(fields)
    return body


def bill_body(trxid: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "billOperator": "DSP",
        "billNumber": "123456789",
        "billAmount": "120.50",
        "mobileNumber": "01812345678",
        "monthName": "April",
        "note": "flat 3B",
        "trxid": trxid,
    }
    body.update(fields)
    return body


StartSandbox = Callable[..., Client]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(clock: FakeClock) -> Iterator[StartSandbox]:
    """Start sandboxes on the fake clock and stop them after the test."""
    running: list[RunningSandbox] = []

    def start_with(*, real_clock: bool = False, **settings: Any) -> Client:
        settings.setdefault("processing_seconds", 10)
        config = SandboxConfig(**settings)
        sandbox = start_sandbox(config, clock=time.time if real_clock else clock)
        running.append(sandbox)
        return Client(sandbox)

    yield start_with
    for sandbox in running:
        sandbox.stop()


# Recharge and the ledger


def test_recharge_charges_balance_once(start: StartSandbox) -> None:
    client = start(balance=1000)

    answer = client.recharge("T1")
    ledger = client.ledger()

    assert answer == {"result": True, "message": "Recharge successful"}
    assert ledger["balance"] == 950
    assert len(ledger["charges"]) == 1


def test_ledger_entry_lists_every_field(start: StartSandbox) -> None:
    client = start()

    client.recharge("T1", amount=149, package_id="GP-D-149")
    entry = client.charges("T1")[0]

    assert entry["kind"] == "recharge"
    assert entry["number"] == "01712345678"
    assert entry["operator"] == "GP"
    assert entry["type"] == "prepaid"
    assert entry["amount"] == 149
    assert entry["package_id"] == "GP-D-149"
    assert entry["status"] == "Processing"
    assert entry["charged_at"] == "2027-01-15T08:00:00.000+00:00"


RECHARGE_REFUSALS = [
    ("short-number", {"number": "1712345678"}, "Invalid number"),
    ("long-number", {"number": "017123456789"}, "Invalid number"),
    ("numeric-number", {"number": 1712345678}, "Invalid number"),
    ("unknown-operator", {"operator": "XX"}, "Invalid operator"),
    ("lower-case-operator", {"operator": "gp"}, "Invalid operator"),
    ("unknown-type", {"type": "prepay"}, "Invalid type"),
    ("skitto-postpaid", {"operator": "SK", "type": "postpaid"}, "Skitto"),
    ("below-minimum", {"amount": 8}, "minimum is 9"),
    ("fraction", {"amount": "50.5"}, "whole number"),
    ("boolean", {"amount": True}, "whole number"),
    ("missing-amount", {"amount": None}, "whole number"),
    ("huge-amount", {"amount": "1E+999999"}, "largest possible balance"),
    ("unknown-package", {"package_id": "GP-X-1"}, "Unknown package_id"),
    ("package-price", {"package_id": "GP-D-149", "amount": 150}, "its price is 149"),
    ("package-operator", {"package_id": "RB-D-149", "amount": 149}, "is a RB offer"),
    ("empty-trxid", {"trxid": ""}, "trxid"),
    ("missing-trxid", {"trxid": None}, "trxid"),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [(fields, expected) for _, fields, expected in RECHARGE_REFUSALS],
    ids=[case for case, _, _ in RECHARGE_REFUSALS],
)
def test_recharge_validation_rejects_bad_fields(
    start: StartSandbox, fields: dict[str, Any], expected: str
) -> None:
    client = start()

    answer = decode(client.post("/api/recharge", {**recharge_body("T1"), **fields}))

    assert answer["result"] is False
    assert expected in answer["message"]
    assert client.ledger()["charges"] == []


def test_recharge_accepts_skitto_text_amount(start: StartSandbox) -> None:
    client = start()

    answer = client.recharge("T1", operator="SK", amount="30")

    assert answer["result"] is True
    assert client.charges("T1")[0]["amount"] == 30


def test_drive_pack_uses_drive_balance(start: StartSandbox) -> None:
    client = start(balance=1000, drive_balance=500)

    client.recharge("T1", amount=149, package_id="GP-D-149")
    client.recharge("T2", amount=48, package_id="GP-R-48")
    ledger = client.ledger()

    assert ledger["drive_balance"] == 351
    assert ledger["balance"] == 952


def test_recharge_insufficient_balance_charges_nothing(start: StartSandbox) -> None:
    client = start(balance=40)

    answer = client.recharge("T1", amount=50)

    assert answer == {"result": False, "message": "Insufficient balance"}
    assert client.ledger()["balance"] == 40
    assert client.charges("T1") == []


def test_drive_pack_insufficient_drive_balance(start: StartSandbox) -> None:
    client = start(balance=10_000, drive_balance=100)

    answer = client.recharge("T1", amount=149, package_id="GP-D-149")

    assert answer == {"result": False, "message": "Insufficient balance"}
    assert client.charges("T1") == []


def test_refused_trxid_can_be_charged_later(start: StartSandbox) -> None:
    client = start(balance=10)
    client.recharge("T1")

    client.http.post("/sandbox/balance", json={"balance": 100})
    answer = client.recharge("T1")

    assert answer["result"] is True
    assert len(client.charges("T1")) == 1


# Credentials


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"successtopup_key": "k"},
        {"successtopup_key": "k", "successtopup_secret": ""},
        {"successtopup_key": 1, "successtopup_secret": "s"},
    ],
    ids=["none", "no-secret", "empty-secret", "number-key"],
)
def test_credentials_rejected_when_missing(
    start: StartSandbox, credentials: dict[str, Any]
) -> None:
    client = start()

    response = client.http.post(
        "/api/recharge", json={**recharge_body("T1"), **credentials}
    )

    assert response.status_code == 200
    assert decode(response) == {"result": False, "message": "Invalid credentials"}
    assert client.charges("T1") == []


def test_credentials_must_match_configured_pair(start: StartSandbox) -> None:
    client = start(key="test-key", secret="other-secret")

    balance = client.call("/api/balance")
    status = client.status("T1")

    assert balance == {"result": False, "message": "Invalid credentials"}
    assert status == {"result": False, "message": "Invalid credentials"}


def test_credentials_accept_configured_pair(
    start: StartSandbox,
) -> None:
    client = start(key="test-key", secret="test-secret", balance=70)

    assert client.call("/api/balance") == {
        "result": True,
        "balance": 70,
        "driveBalance": 100_000,
    }


def test_credentials_never_appear_in_logs(start: StartSandbox) -> None:
    client = start()
    client.recharge("T1")
    client.call("/api/sandbox/test", action="balance")

    shown = (
        client.http.get("/sandbox/requests").text
        + client.http.get("/sandbox/ledger").text
    )

    assert "test-secret" not in shown
    assert "test-key" not in shown


def test_config_repr_hides_credentials() -> None:
    config = SandboxConfig(key="test-key", secret="test-secret")

    assert "test-secret" not in repr(config)
    assert "test-key" not in repr(config)


# De-duplication


def test_dedupe_replays_first_response(start: StartSandbox) -> None:
    client = start(balance=1000)

    answers = [client.recharge("T1") for _ in range(3)]

    assert answers == [{"result": True, "message": "Recharge successful"}] * 3
    assert len(client.charges("T1")) == 1
    assert client.ledger()["balance"] == 950


def test_dedupe_replays_even_changed_body(start: StartSandbox) -> None:
    client = start(balance=1000)
    client.recharge("T1", amount=50)

    answer = client.recharge("T1", amount=80)

    assert answer["result"] is True
    assert client.ledger()["balance"] == 950


def test_no_dedupe_charges_every_repeat(start: StartSandbox) -> None:
    client = start(balance=1000, dedupe=False)

    for _ in range(3):
        client.recharge("T1")

    assert len(client.charges("T1")) == 3
    assert client.ledger()["balance"] == 850


# Status


def test_status_moves_processing_to_success(
    start: StartSandbox, clock: FakeClock
) -> None:
    client = start(processing_seconds=2)
    client.recharge("T1")

    before = client.status("T1")
    clock.advance(2)
    after = client.status("T1")

    assert before == {"result": True, "status": "Processing"}
    assert after == {"result": True, "status": "Success"}


def test_status_cancel_refunds_balance(start: StartSandbox, clock: FakeClock) -> None:
    client = start(processing_seconds=2, cancel_rate=1, balance=1000)
    client.recharge("T1")

    debited = client.ledger()["balance"]
    clock.advance(2)
    status = client.status("T1")
    ledger = client.ledger()

    assert debited == 950
    assert status == {"result": True, "status": "Cancel"}
    assert ledger["balance"] == 1000
    assert ledger["charges"][0]["status"] == "Cancel"


def test_status_cancel_refunds_only_once(start: StartSandbox, clock: FakeClock) -> None:
    client = start(processing_seconds=1, cancel_rate=1, balance=1000)
    client.recharge("T1")
    clock.advance(1)

    balances = [client.call("/api/balance")["balance"] for _ in range(3)]

    assert balances == [1000, 1000, 1000]


def test_status_unseen_trxid_not_found(start: StartSandbox) -> None:
    client = start()

    assert client.status("NEVER") == {
        "result": False,
        "message": "Transaction not found",
    }


def test_status_missing_trxid_refused(start: StartSandbox) -> None:
    client = start()

    answer = client.call("/api/status")

    assert answer["result"] is False
    assert "trxid" in answer["message"]


def test_seeded_cancel_draws_match_rate(start: StartSandbox, clock: FakeClock) -> None:
    client = start(processing_seconds=1, cancel_rate=0.5, seed=3)
    for index in range(40):
        client.recharge(f"T{index}")
    clock.advance(1)

    statuses = {client.status(f"T{index}")["status"] for index in range(40)}

    assert statuses == {"Success", "Cancel"}


# Bill payment


def test_bill_pay_charges_exact_decimal(start: StartSandbox) -> None:
    client = start(balance=1000)

    answer = decode(client.post("/api/bill-pay", bill_body("B1")))
    ledger = client.ledger()

    assert answer == {"result": True, "message": "Bill payment transaction successful"}
    assert ledger["balance"] == Decimal("879.50")
    assert ledger["charges"][0]["amount"] == "120.50"
    assert ledger["charges"][0]["kind"] == "bill"


def test_bill_pay_accepts_number_amount(start: StartSandbox) -> None:
    client = start(balance=1000)

    client.http.post(
        "/api/bill-pay",
        content=json.dumps({**CREDENTIALS, **bill_body("B1")}).replace(
            '"120.50"', "99.25"
        ),
    )

    assert client.charges("B1")[0]["amount"] == "99.25"


def test_bill_pay_dedupes_and_settles(start: StartSandbox, clock: FakeClock) -> None:
    client = start(processing_seconds=1)
    client.post("/api/bill-pay", bill_body("B1"))
    client.post("/api/bill-pay", bill_body("B1"))
    clock.advance(1)

    assert len(client.charges("B1")) == 1
    assert client.status("B1") == {"result": True, "status": "Success"}


BILL_REFUSALS = [
    ("unknown-operator", {"billOperator": "XYZ"}, "Invalid billOperator"),
    ("empty-bill-number", {"billNumber": ""}, "Missing billNumber"),
    ("zero-amount", {"billAmount": "0"}, "Invalid billAmount"),
    ("negative-amount", {"billAmount": "-5"}, "Invalid billAmount"),
    ("three-decimals", {"billAmount": "10.005"}, "2 decimal places"),
    ("huge-amount", {"billAmount": "1E+999999"}, "largest possible balance"),
    ("short-mobile", {"mobileNumber": "12345"}, "Invalid mobileNumber"),
    ("unknown-month", {"monthName": "Smarch"}, "Invalid monthName"),
    ("empty-month", {"monthName": ""}, "Invalid monthName"),
    ("empty-trxid", {"trxid": ""}, "trxid"),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [(fields, expected) for _, fields, expected in BILL_REFUSALS],
    ids=[case for case, _, _ in BILL_REFUSALS],
)
def test_bill_pay_rejects_bad_fields(
    start: StartSandbox, fields: dict[str, Any], expected: str
) -> None:
    client = start()

    answer = decode(client.post("/api/bill-pay", {**bill_body("B1"), **fields}))

    assert answer["result"] is False
    assert expected in answer["message"]
    assert client.ledger()["charges"] == []


@pytest.mark.parametrize("month", ["April", "apr", "April 2026", "2026-04"])
def test_bill_pay_accepts_month_forms(start: StartSandbox, month: str) -> None:
    client = start()

    answer = decode(client.post("/api/bill-pay", bill_body("B1", monthName=month)))

    assert answer["result"] is True


# Offers, balance and the vendor's mock path


def test_drives_filters_operator_and_type(start: StartSandbox) -> None:
    client = start()

    drives = client.call("/api/drives", operator="RB", type="drive")["drives"]

    assert {offer["operator"] for offer in drives} == {"RB"}
    assert {offer["type"] for offer in drives} == {"drive"}
    assert len(drives) == 2


def test_drives_all_lists_every_operator(start: StartSandbox) -> None:
    client = start()

    drives = client.call("/api/drives", operator="ALL")["drives"]

    assert {offer["operator"] for offer in drives} == {"GP", "RB", "AT", "TT", "BL"}


def test_drives_rejects_unknown_operator(start: StartSandbox) -> None:
    client = start()

    answer = client.call("/api/drives", operator="SK")

    assert answer["result"] is False
    assert "Invalid operator" in answer["message"]


def test_balance_returns_both_balances(start: StartSandbox) -> None:
    client = start(balance=500, drive_balance=200)

    assert client.call("/api/balance") == {
        "result": True,
        "balance": 500,
        "driveBalance": 200,
    }


MOCK_ANSWERS = [
    (
        "recharge",
        recharge_body("M1"),
        {"result": True, "message": "Recharge successful"},
    ),
    (
        "bill-pay",
        bill_body("M2"),
        {"result": True, "message": "Bill payment transaction successful"},
    ),
    ("status", {"trxid": "M3"}, {"result": True, "status": "Success"}),
    ("balance", {}, {"result": True, "balance": 10_000, "driveBalance": 5_000}),
]


@pytest.mark.parametrize(
    ("action", "payload", "expected"),
    MOCK_ANSWERS,
    ids=[action for action, _, _ in MOCK_ANSWERS],
)
def test_sandbox_test_mocks_without_charging(
    start: StartSandbox, action: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    client = start(balance=1000)

    answer = client.call("/api/sandbox/test", action=action, payload=payload)
    ledger = client.ledger()

    assert answer == expected
    assert ledger["charges"] == []
    assert ledger["balance"] == 1000


def test_sandbox_test_checks_recharge_payload(start: StartSandbox) -> None:
    client = start()

    answer = client.call(
        "/api/sandbox/test", action="recharge", payload=recharge_body("M1", amount=5)
    )

    assert answer["result"] is False
    assert "minimum is 9" in answer["message"]


def test_sandbox_test_lists_drives(start: StartSandbox) -> None:
    client = start()

    answer = client.call(
        "/api/sandbox/test", action="drives", payload={"operator": "GP"}
    )

    assert len(answer["drives"]) == 4


def test_sandbox_test_rejects_unknown_action(start: StartSandbox) -> None:
    client = start()

    answer = client.call("/api/sandbox/test", action="refund", payload={})

    assert answer["result"] is False
    assert "Invalid action" in answer["message"]


# Control paths


def test_set_balance_changes_both_balances(start: StartSandbox) -> None:
    client = start()

    response = client.http.post(
        "/sandbox/balance", json={"balance": 77, "drive_balance": 33}
    )
    ledger = client.ledger()

    assert response.status_code == 200
    assert ledger["balance"] == 77
    assert ledger["drive_balance"] == 33


@pytest.mark.parametrize(
    "body",
    [
        {"balance": -1},
        {"balance": "100"},
        {"drive_balance": 1.005},
        {"balance": 10**30},
        {},
    ],
    ids=["negative", "text", "three-decimals", "huge", "empty"],
)
def test_set_balance_rejects_invalid_values(
    start: StartSandbox, body: dict[str, Any]
) -> None:
    client = start(balance=10)

    response = client.http.post("/sandbox/balance", json=body)

    assert response.status_code == 400
    assert client.ledger()["balance"] == 10


def test_requests_log_hashes_body_without_credentials(start: StartSandbox) -> None:
    client = start()
    body = recharge_body("T1")
    client.post("/api/recharge", body)
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )

    entry = client.requests()[0]

    assert entry["path"] == "/api/recharge"
    assert entry["trxid"] == "T1"
    assert entry["body_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert entry["at"] == "2027-01-15T08:00:00.000+00:00"


def test_requests_log_keeps_decimal_text(start: StartSandbox) -> None:
    client = start()
    body = bill_body("B1")
    raw = json.dumps({**CREDENTIALS, **body}).replace('"120.50"', "120.50")
    client.http.post("/api/bill-pay", content=raw)
    canonical = json.dumps(
        {**body, "billAmount": 0}, sort_keys=True, separators=(",", ":")
    ).replace('"billAmount":0', '"billAmount":120.50')

    entry = client.requests()[0]

    assert entry["body_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()


def test_requests_log_records_mock_action(start: StartSandbox) -> None:
    client = start()
    client.call("/api/sandbox/test", action="status", payload={})

    entry = client.requests()[0]

    assert entry["path"] == "/api/sandbox/test"
    assert entry["action"] == "status"


def test_ledger_counts_requests_by_path(start: StartSandbox) -> None:
    client = start()
    client.recharge("T1")
    client.recharge("T2")
    client.status("T1")

    ledger = client.ledger()

    assert ledger["requests_by_path"]["/api/recharge"] == 2
    assert ledger["requests_by_path"]["/api/status"] == 1
    assert ledger["requests_by_path"]["/sandbox/ledger"] == 1
    assert ledger["requests"] == 3


def test_unknown_path_returns_404(start: StartSandbox) -> None:
    client = start()

    response = client.http.post("/api/refund", json=CREDENTIALS)

    assert response.status_code == 404


def test_wrong_method_returns_405(start: StartSandbox) -> None:
    client = start()

    response = client.http.get("/api/recharge")

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_non_object_body_returns_400(start: StartSandbox) -> None:
    client = start()

    response = client.http.post("/api/recharge", content=b"[1, 2]")

    assert response.status_code == 400
    assert client.ledger()["charges"] == []


# HTTP details


def send_raw(client: Client, data: bytes, *, reads: int = 1) -> bytes:
    """Send raw bytes on one connection and return what the server sent back."""
    port = client.sandbox.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1") < reads or not _is_complete(received):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def _is_complete(data: bytes) -> bool:
    head, separator, body = data.rpartition(b"\r\n\r\n")
    match = re.search(rb"Content-Length: (\d+)", head.split(b"HTTP/1.1")[-1])
    return bool(separator) and match is not None and len(body) >= int(match[1])


def raw_post(path: str, body: bytes, *, headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"{headers}\r\n"
    ).encode() + body


def test_keep_alive_serves_pipelined_requests(start: StartSandbox) -> None:
    client = start()
    body = json.dumps(CREDENTIALS).encode()

    received = send_raw(
        client, raw_post("/api/balance", body) + raw_post("/api/balance", body), reads=2
    )

    assert received.count(b"HTTP/1.1 200 OK") == 2


def test_connection_close_ends_connection(start: StartSandbox) -> None:
    client = start()
    body = json.dumps(CREDENTIALS).encode()
    request = raw_post("/api/balance", body, headers="Connection: close\r\n")

    with socket.create_connection(("127.0.0.1", client.sandbox.port)) as connection:
        connection.settimeout(5)
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk

    assert b"Connection: close" in received
    assert received.startswith(b"HTTP/1.1 200 OK")


def test_malformed_request_returns_400(start: StartSandbox) -> None:
    client = start()

    received = send_raw(client, b"NONSENSE\r\n\r\n")

    assert received.startswith(b"HTTP/1.1 400")


def test_chunked_body_returns_501(start: StartSandbox) -> None:
    client = start()
    request = (
        b"POST /api/balance HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )

    received = send_raw(client, request)

    assert received.startswith(b"HTTP/1.1 501")


def test_latency_delays_every_response(start: StartSandbox) -> None:
    client = start(latency_ms=100)

    started = time.perf_counter()
    client.call("/api/balance")
    elapsed = time.perf_counter() - started

    assert elapsed >= 0.09


# Faults


def test_fault_names_cover_every_documented_fault() -> None:
    assert set(FAULT_NAMES) == {
        "refuse",
        "5xx-before-charge",
        "5xx-after-charge",
        "drop-before-charge",
        "drop-after-charge",
        "slow-after-charge",
        "429",
        "status-lag",
    }


FAULT_EFFECTS = [
    ("refuse", 200, 0),
    ("5xx-before-charge", 503, 0),
    ("5xx-after-charge", 503, 1),
    ("drop-before-charge", None, 0),
    ("drop-after-charge", None, 1),
    ("429", 429, 0),
    ("status-lag", 200, 1),
]


@pytest.mark.parametrize(
    ("fault", "http_status", "charges"),
    FAULT_EFFECTS,
    ids=[fault for fault, _, _ in FAULT_EFFECTS],
)
def test_fault_effect_on_response_ledger(
    start: StartSandbox, fault: str, http_status: int | None, charges: int
) -> None:
    client = start(faults=((fault, 1.0),))

    if http_status is None:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post("/api/recharge", recharge_body("T1"))
    else:
        response = client.post("/api/recharge", recharge_body("T1"))
        assert response.status_code == http_status

    assert len(client.charges("T1")) == charges


def test_fault_refuse_returns_result_false(start: StartSandbox) -> None:
    client = start(faults=(("refuse", 1.0),))

    answer = client.recharge("T1")

    assert answer["result"] is False


def test_fault_hits_bill_payments(start: StartSandbox) -> None:
    client = start(faults=(("drop-after-charge", 1.0),))

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/api/bill-pay", bill_body("B1"))

    assert len(client.charges("B1")) == 1


def test_fault_spares_status_and_balance(start: StartSandbox) -> None:
    client = start(faults=(("5xx-before-charge", 1.0),))

    assert client.call("/api/balance")["result"] is True
    assert client.status("NEVER")["message"] == "Transaction not found"


def test_fault_slow_times_out_charged(start: StartSandbox) -> None:
    client = start(faults=(("slow-after-charge", 1.0),), slow_seconds=0.5)
    impatient = httpx.Client(base_url=client.sandbox.url, timeout=0.1)

    with pytest.raises(httpx.ReadTimeout):
        impatient.post("/api/recharge", json={**CREDENTIALS, **recharge_body("T1")})

    assert len(client.charges("T1")) == 1


def test_fault_slow_responds_after_delay(start: StartSandbox) -> None:
    client = start(faults=(("slow-after-charge", 1.0),), slow_seconds=0.2)

    started = time.perf_counter()
    answer = client.recharge("T1")
    elapsed = time.perf_counter() - started

    assert answer["result"] is True
    assert elapsed >= 0.19


def test_fault_429_sends_retry_after(start: StartSandbox) -> None:
    client = start(faults=(("429", 1.0),), retry_after=0.25)

    response = client.post("/api/recharge", recharge_body("T1"))

    assert response.headers["Retry-After"] == "0.25"


def test_fault_status_lag_hides_charge(start: StartSandbox, clock: FakeClock) -> None:
    client = start(faults=(("status-lag", 1.0),), status_lag_seconds=5)
    client.recharge("T1")

    hidden = client.status("T1")
    clock.advance(5)
    shown = client.status("T1")

    assert hidden == {"result": False, "message": "Transaction not found"}
    assert shown == {"result": True, "status": "Processing"}


def test_fault_after_charge_with_dedupe_replay(start: StartSandbox) -> None:
    client = start(faults=(("drop-after-charge", 1.0),), balance=1000)

    for _ in range(2):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post("/api/recharge", recharge_body("T1"))

    assert len(client.charges("T1")) == 1
    assert client.ledger()["balance"] == 950


def test_fault_after_charge_without_dedupe(start: StartSandbox) -> None:
    client = start(faults=(("5xx-after-charge", 1.0),), dedupe=False)

    for _ in range(2):
        client.post("/api/recharge", recharge_body("T1"))

    assert len(client.charges("T1")) == 2


def test_pick_fault_uses_disjoint_shares() -> None:
    faults = (("refuse", 0.1), ("429", 0.2))

    assert pick_fault(faults, 0.0) == "refuse"
    assert pick_fault(faults, 0.099) == "refuse"
    assert pick_fault(faults, 0.1) == "429"
    assert pick_fault(faults, 0.299) == "429"
    assert pick_fault(faults, 0.3) is None


def seeded_outcomes(start: StartSandbox, seed: int) -> list[bool]:
    client = start(seed=seed, faults=(("refuse", 0.5),))
    return [client.recharge(f"T{index}")["result"] for index in range(30)]


def test_seeded_fault_draws_reproducible(start: StartSandbox) -> None:
    first = seeded_outcomes(start, seed=11)
    second = seeded_outcomes(start, seed=11)
    other = seeded_outcomes(start, seed=12)

    assert first == second
    assert first != other
    assert True in first
    assert False in first


def test_seeded_draws_ignore_request_order(start: StartSandbox) -> None:
    forward = start(seed=5, faults=(("refuse", 0.5),))
    backward = start(seed=5, faults=(("refuse", 0.5),))
    trxids = [f"T{index}" for index in range(20)]

    forward_results = {trxid: forward.recharge(trxid)["result"] for trxid in trxids}
    backward_results = {
        trxid: backward.recharge(trxid)["result"] for trxid in reversed(trxids)
    }

    assert forward_results == backward_results


def test_fault_draws_again_on_retry(start: StartSandbox) -> None:
    client = start(seed=1, faults=(("5xx-before-charge", 0.5),))

    statuses = [
        client.post("/api/recharge", recharge_body("T1")).status_code for _ in range(20)
    ]

    assert 503 in statuses
    assert 200 in statuses
    assert len(client.charges("T1")) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("drop-after-charge=0.01", ("drop-after-charge", 0.01)),
        ("429=1", ("429", 1.0)),
        ("refuse=0", ("refuse", 0.0)),
    ],
)
def test_parse_fault_reads_name_and_rate(
    text: str, expected: tuple[str, float]
) -> None:
    assert parse_fault(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode=0.1", "Unknown fault 'explode'"),
        ("refuse=1.5", "from 0 to 1"),
        ("refuse=-0.1", "from 0 to 1"),
        ("refuse=lots", "from 0 to 1"),
        ("refuse", "NAME=RATE"),
    ],
)
def test_parse_fault_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_fault(text)


# Configuration


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"faults": (("refuse", 0.7), ("429", 0.4))}, "add up to 1.1"),
        ({"cancel_rate": 2.0}, "cancel rate"),
        ({"processing_seconds": -1.0}, "processing seconds"),
        ({"webhook_url": "http://example.com/hook", "webhook_token": "t"}, "loopback"),
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "webhook token"),
        ({"webhook_url": "ftp://127.0.0.1/hook", "webhook_token": "t"}, "Invalid"),
        ({"port": 70000}, "Invalid port"),
        ({"balance": -5}, "Invalid balance"),
        ({"drive_balance": 10**20}, "Invalid drive balance"),
        ({"faults": (("explode", 0.1),)}, "Unknown fault 'explode'"),
    ],
    ids=[
        "fault-total",
        "rate",
        "delay",
        "remote-webhook",
        "no-token",
        "scheme",
        "port",
        "negative-balance",
        "huge-balance",
        "unknown-fault",
    ],
)
def test_config_rejects_unusable_settings(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        start_sandbox(SandboxConfig(**settings))


def test_port_in_use_raises_config_error(start: StartSandbox) -> None:
    client = start()

    with pytest.raises(ConfigError, match="Cannot listen"):
        start_sandbox(SandboxConfig(port=client.sandbox.port))


def test_state_path_rejects_foreign_database(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE batches (id TEXT)")
    connection.close()

    with pytest.raises(ConfigError, match="not a sandbox ledger"):
        start_sandbox(SandboxConfig(state_path=path))


def test_state_path_rejects_non_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database at all, just some text" * 100)

    with pytest.raises(ConfigError, match="Cannot use"):
        start_sandbox(SandboxConfig(state_path=path))


# State across restarts


def test_state_file_survives_restart(
    start: StartSandbox, clock: FakeClock, tmp_path: Path
) -> None:
    state = tmp_path / "ledger.db"
    first = start(state_path=state, balance=1000, processing_seconds=1)
    first.recharge("T1")
    first.sandbox.stop()

    clock.advance(1)
    second = start(state_path=state, balance=5, processing_seconds=1)
    replay = second.recharge("T1")

    assert second.ledger()["balance"] == 950
    assert len(second.charges("T1")) == 1
    assert second.status("T1") == {"result": True, "status": "Success"}
    assert replay["result"] is True


def test_state_file_readable_by_owner_only(start: StartSandbox, tmp_path: Path) -> None:
    state = tmp_path / "ledger.db"

    start(state_path=state)

    assert state.stat().st_mode & 0o077 == 0


def run_module(
    *arguments: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bulk_topup.sandbox", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_listening_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
    assert match is not None, f"unexpected first line {line!r}"
    return match[1]


def test_module_prints_listening_line_first() -> None:
    process = run_module("--port", "0")
    try:
        url = read_listening_url(process)
        response = httpx.post(url + "/api/balance", json=CREDENTIALS, timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)

    assert response.json()["result"] is True
    assert process.returncode == 0


def test_module_uses_environment_credentials() -> None:
    env = {**os.environ, "STU_KEY": "env-key", "STU_SECRET": "env-secret"}
    process = run_module("--port", "0", env=env)
    try:
        url = read_listening_url(process)
        wrong = httpx.post(url + "/api/balance", json=CREDENTIALS, timeout=5).json()
        right = httpx.post(
            url + "/api/balance",
            json={"successtopup_key": "env-key", "successtopup_secret": "env-secret"},
            timeout=5,
        ).json()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)

    assert wrong["result"] is False
    assert right["result"] is True
    assert process.returncode == 0


def test_module_rejects_unknown_fault() -> None:
    process = run_module("--fault", "explode=0.1")
    _, errors = process.communicate(timeout=30)

    assert process.returncode == 2
    assert "Unknown fault 'explode'" in errors


def test_state_file_survives_kill(start: StartSandbox, tmp_path: Path) -> None:
    state = tmp_path / "ledger.db"
    process = run_module("--port", "0", "--state", str(state), "--balance", "1000")
    try:
        url = read_listening_url(process)
        body = {**CREDENTIALS, **recharge_body("T1")}
        httpx.post(url + "/api/recharge", json=body, timeout=5)
    finally:
        process.kill()
        process.communicate(timeout=10)

    restarted = start(state_path=state, real_clock=True)

    assert len(restarted.charges("T1")) == 1
    assert restarted.ledger()["balance"] == 950


# Webhooks


class WebhookReceiver:
    """A loopback HTTP server that records every webhook push it receives."""

    def __init__(self) -> None:
        self.pushes: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                receiver.pushes.append((self.headers["x-webhook-token"], body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def wait_for(
        self, count: int, timeout: float = 5.0
    ) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while len(self.pushes) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.pushes)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    webhook_receiver = WebhookReceiver()
    yield webhook_receiver
    webhook_receiver.close()


def start_with_webhooks(
    start: StartSandbox, receiver: WebhookReceiver, **settings: Any
) -> Client:
    return start(
        real_clock=True,
        processing_seconds=0.05,
        webhook_url=receiver.url,
        webhook_token="hook-token",
        **settings,
    )


def test_webhook_pushes_processing_then_success(
    start: StartSandbox, receiver: WebhookReceiver
) -> None:
    client = start_with_webhooks(start, receiver)
    client.recharge("T1")

    pushes = receiver.wait_for(2)

    assert [body["status"] for _, body in pushes] == ["Processing", "Success"]
    assert {token for token, _ in pushes} == {"hook-token"}
    assert pushes[1][1]["transactionId"] == "T1"
    assert pushes[1][1]["updatedAt"].endswith("Z")


def test_webhook_pushes_cancel_with_note(
    start: StartSandbox, receiver: WebhookReceiver
) -> None:
    client = start_with_webhooks(start, receiver, cancel_rate=1)
    client.post("/api/bill-pay", bill_body("B1"))

    pushes = receiver.wait_for(2)

    assert pushes[1][1]["status"] == "Cancel"
    assert pushes[1][1]["note"] == "flat 3B"


def test_webhook_duplicate_sends_each_twice(
    start: StartSandbox, receiver: WebhookReceiver
) -> None:
    client = start_with_webhooks(start, receiver, webhook_duplicate=1)
    client.recharge("T1")

    pushes = receiver.wait_for(4)

    statuses = [body["status"] for _, body in pushes]
    assert statuses == ["Processing", "Processing", "Success", "Success"]


def test_webhook_reorder_sends_processing_last(
    start: StartSandbox, receiver: WebhookReceiver
) -> None:
    client = start_with_webhooks(start, receiver, webhook_reorder=1)
    client.recharge("T1")

    pushes = receiver.wait_for(2)

    assert [body["status"] for _, body in pushes] == ["Success", "Processing"]


def test_webhook_forge_uses_wrong_token(
    start: StartSandbox, receiver: WebhookReceiver
) -> None:
    client = start_with_webhooks(start, receiver, webhook_forge=1, cancel_rate=1)
    client.recharge("T1")

    pushes = receiver.wait_for(3)
    forged = [body for token, body in pushes if token != "hook-token"]

    assert len(pushes) == 3
    assert len(forged) == 1
    assert forged[0]["status"] == "Success"


def test_webhook_pushes_only_for_charges(
    start: StartSandbox, receiver: WebhookReceiver
) -> None:
    client = start_with_webhooks(start, receiver, balance=60)
    client.recharge("T1")
    client.recharge("T2")

    receiver.wait_for(2)
    # A push for the refused T2 would arrive with T1's, so a short wait suffices.
    pushes = receiver.wait_for(3, timeout=0.2)

    assert {body["transactionId"] for _, body in pushes} == {"T1"}
    assert len(pushes) == 2


def test_webhook_pushes_outcome_after_restart(
    start: StartSandbox, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    state = tmp_path / "ledger.db"
    first = start(real_clock=True, state_path=state, processing_seconds=0.3)
    first.recharge("T1")
    first.sandbox.stop()

    start_with_webhooks(start, receiver, state_path=state)
    pushes = receiver.wait_for(1)

    assert [body["status"] for _, body in pushes] == ["Success"]
    assert pushes[0][1]["transactionId"] == "T1"


# The click command


def test_command_help_lists_every_option() -> None:
    result = CliRunner().invoke(sandbox_serve_command, ["--help"])

    assert result.exit_code == 0
    for option in [
        "--port",
        "--state",
        "--balance",
        "--drive-balance",
        "--latency-ms",
        "--processing-seconds",
        "--cancel-rate",
        "--no-dedupe",
        "--webhook-url",
        "--webhook-token",
        "--webhook-duplicate",
        "--webhook-reorder",
        "--webhook-forge",
        "--seed",
        "--slow-seconds",
        "--status-lag-seconds",
        "--retry-after",
        "--fault",
    ]:
        assert option in result.output


def test_command_reports_unusable_setting() -> None:
    result = CliRunner().invoke(
        sandbox_serve_command, ["--webhook-url", "http://example.com/hook"]
    )

    assert result.exit_code == 2
    assert "not on this machine" in result.output
