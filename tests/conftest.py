"""Shared fixtures: an isolated environment, a real sandbox, a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

SECRET = "s3cret-never-logged-7f3a"
KEY = "test-key-0001"
TOOL_ENVIRONMENT = ("STU_", "BULK_TOPUP_")


@pytest.fixture(autouse=True)
def isolated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Keep every test away from the user's config, journal and credentials."""
    for name in list(os.environ):
        if name.startswith(TOOL_ENVIRONMENT):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.chdir(tmp_path)
    yield


@dataclass
class Sandbox:
    """A sandbox server running as a real process on loopback."""

    url: str
    process: subprocess.Popen[str]

    def ledger(self) -> dict[str, Any]:
        """Return the sandbox's ledger."""
        return httpx.get(self.url + "/sandbox/ledger", timeout=10).json()

    def requests(self) -> list[dict[str, Any]]:
        """Return every request the sandbox received."""
        return httpx.get(self.url + "/sandbox/requests", timeout=10).json()["requests"]

    def charges_per_trxid(self) -> Counter[str]:
        """Return how many times each trxid was charged."""
        return Counter(charge["trxid"] for charge in self.ledger()["charges"])

    def set_balance(self, balance: int, drive_balance: int = 100_000) -> None:
        """Set the account's balances."""
        httpx.post(
            self.url + "/sandbox/balance",
            json={"balance": balance, "drive_balance": drive_balance},
            timeout=10,
        ).raise_for_status()

    def stop(self) -> None:
        """Stop the server and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_sandbox_process(*options: str) -> Sandbox:
    """Start ``bulk-topup sandbox serve`` on a free port and wait for it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bulk_topup.sandbox", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"sandbox did not start: {line!r}")
    return Sandbox(line.removeprefix("listening on "), process)


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with options; every one is stopped after the test."""
    started: list[Sandbox] = []

    def start(*options: str) -> Sandbox:
        sandbox = start_sandbox_process(*options)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A sandbox with fast settling and plenty of balance."""
    return sandbox_factory("--processing-seconds", "0.2", "--seed", "1")


def tool_environment(**extra: str) -> dict[str, str]:
    """Return an environment for running the tool with test credentials."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(TOOL_ENVIRONMENT)
    }
    environment.update(
        STU_KEY=KEY,
        STU_SECRET=SECRET,
        BULK_TOPUP_SETTLE_INTERVAL="0.1",
        BULK_TOPUP_GRACE_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    environment.update(extra)
    return environment


def run_tool(
    *args: str, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``bulk-topup`` as a real process and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "bulk_topup", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=tool_environment(**extra),
        check=False,
    )


def run_json(*args: str, **extra: str) -> tuple[int, dict[str, Any]]:
    """Run a ``--json`` command and return its exit code and document."""
    result = run_tool(*args, "--json", **extra)
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(
            f"no JSON on stdout (exit {result.returncode}): "
            f"{result.stdout!r} {result.stderr!r}"
        ) from error
    return result.returncode, document


def write_csv(
    path: Path, rows: list[list[str]], header: list[str] | None = None
) -> Path:
    """Write a small recharge batch as CSV."""
    lines = [",".join(header or ["number", "operator", "type", "amount"])]
    lines.extend(",".join(row) for row in rows)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def numbered_rows(count: int, start: int = 0) -> list[list[str]]:
    """Return count valid rows with distinct GP numbers."""
    return [
        [f"0171{start + index:07d}", "GP", "prepaid", str(10 + index % 50)]
        for index in range(count)
    ]
