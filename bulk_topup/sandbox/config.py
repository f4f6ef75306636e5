"""The sandbox's settings and the checks that reject unusable ones."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bulk_topup.errors import ConfigError
from bulk_topup.sandbox.faults import FAULT_NAMES

LOOPBACK_HOST = "127.0.0.1"
# Far above any real account, and low enough that the ledger's amounts in
# poisha fit SQLite's 64-bit integers.
MAX_BALANCE = 10**15


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of one sandbox server; every delay is in (fractional) seconds.

    ``faults`` contains ``(name, rate)`` pairs in the order given: each takes the
    next disjoint share of the draws. ``key`` and ``secret``, when set, are the
    only credentials accepted; otherwise any non-empty pair is.
    """

    port: int = 0
    state_path: Path | None = None
    balance: int = 1_000_000
    drive_balance: int = 100_000
    latency_ms: float = 0
    processing_seconds: float = 2.0
    cancel_rate: float = 0.0
    dedupe: bool = True
    webhook_url: str | None = None
    webhook_token: str | None = None
    webhook_duplicate: float = 0
    webhook_reorder: float = 0
    webhook_forge: float = 0
    seed: int | None = None
    slow_seconds: float = 30
    status_lag_seconds: float = 5
    retry_after: float = 1
    faults: tuple[tuple[str, float], ...] = ()
    # Left out of repr so that the credentials never reach a log or traceback.
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)


def validate_config(config: SandboxConfig) -> None:
    """Raise ConfigError naming the first setting the sandbox cannot use."""
    if not 0 <= config.port <= 65535:
        raise ConfigError(
            f"Invalid port {config.port}: use 1 to 65535, or 0 for a free port."
        )
    _check_balance("balance", config.balance)
    _check_balance("drive balance", config.drive_balance)
    _check_fault_names(config.faults)
    for name, seconds in _delays(config):
        _check_non_negative(name, seconds)
    for name, rate in _rates(config):
        _check_rate(name, rate)
    _check_fault_total(config.faults)
    if config.webhook_url is not None:
        _check_webhook(config.webhook_url, config.webhook_token)


def _delays(config: SandboxConfig) -> list[tuple[str, float]]:
    return [
        ("latency (ms)", config.latency_ms),
        ("processing seconds", config.processing_seconds),
        ("slow seconds", config.slow_seconds),
        ("status lag seconds", config.status_lag_seconds),
        ("retry-after seconds", config.retry_after),
    ]


def _rates(config: SandboxConfig) -> list[tuple[str, float]]:
    rates = [
        ("cancel rate", config.cancel_rate),
        ("webhook duplicate rate", config.webhook_duplicate),
        ("webhook reorder rate", config.webhook_reorder),
        ("webhook forge rate", config.webhook_forge),
    ]
    rates.extend((f"rate of fault {name}", rate) for name, rate in config.faults)
    return rates


def _check_non_negative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"Invalid {name} {value}: it must be 0 or more.")


def _check_balance(name: str, taka: int) -> None:
    if not 0 <= taka <= MAX_BALANCE:
        raise ConfigError(f"Invalid {name} {taka}: use 0 to {MAX_BALANCE:,} Taka.")


def _check_fault_names(faults: tuple[tuple[str, float], ...]) -> None:
    for name, _ in faults:
        if name not in FAULT_NAMES:
            raise ConfigError(
                f"Unknown fault {name!r}: use one of {', '.join(FAULT_NAMES)}."
            )


def _check_rate(name: str, rate: float) -> None:
    if not 0 <= rate <= 1:
        raise ConfigError(f"Invalid {name} {rate}: it must be between 0 and 1.")


def _check_fault_total(faults: tuple[tuple[str, float], ...]) -> None:
    total = sum(rate for _, rate in faults)
    # A small tolerance lets rates such as 0.7 and 0.3 add up to exactly 1.
    if total > 1 + 1e-9:
        raise ConfigError(
            f"Fault rates add up to {total:g}: the faults share one draw per "
            "request, so their rates must add up to 1 or less."
        )


def _check_webhook(url: str, token: str | None) -> None:
    parts = urlsplit(url)
    try:
        _ = parts.port  # Reading the port raises ValueError when it is invalid.
    except ValueError:
        raise ConfigError(
            f"Invalid port in webhook URL {url!r}: use http://127.0.0.1:PORT/PATH."
        ) from None
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"Invalid webhook URL {url!r}: use http://127.0.0.1:PORT/PATH."
        )
    if not _is_loopback(parts.hostname):
        raise ConfigError(
            f"Webhook URL {url!r} is not on this machine: the sandbox sends "
            "webhooks only to a loopback address such as 127.0.0.1."
        )
    if not token:
        raise ConfigError(
            "A webhook URL needs a webhook token: set --webhook-token, which the "
            "sandbox sends in the x-webhook-token header."
        )
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(
            "Invalid webhook token: it goes into an HTTP header, so use printable "
            "ASCII characters without spaces."
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
