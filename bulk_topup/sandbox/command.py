"""The ``sandbox serve`` click command, shared by ``bulk-topup`` and ``-m``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bulk_topup.errors import BulkTopupError
from bulk_topup.sandbox.config import SandboxConfig
from bulk_topup.sandbox.faults import FAULT_NAMES, parse_fault
from bulk_topup.sandbox.runner import serve_sandbox

_DEFAULTS = SandboxConfig()
_RATE = click.FloatRange(0, 1)
_SECONDS = click.FloatRange(min=0)
_EPILOG = """\b
Examples:
  bulk-topup sandbox serve --port 8080
  bulk-topup sandbox serve --state ledger.db --processing-seconds 0.5
  bulk-topup sandbox serve --seed 7 --fault drop-after-charge=0.05 --fault 429=0.1

\b
Fault names: """ + ", ".join(FAULT_NAMES)


def _parse_faults(
    context: click.Context, parameter: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, float], ...]:
    try:
        return tuple(parse_fault(value) for value in values)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("serve", epilog=_EPILOG)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 to listen on; 0 picks a free one.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file that keeps the ledger across restarts [default: in memory].",
)
@click.option(
    "--balance",
    type=click.IntRange(min=0),
    default=_DEFAULTS.balance,
    show_default=True,
    help="Main balance of a new ledger, in Taka.",
)
@click.option(
    "--drive-balance",
    type=click.IntRange(min=0),
    default=_DEFAULTS.drive_balance,
    show_default=True,
    help="Drive balance of a new ledger, in Taka; pays drive packs.",
)
@click.option(
    "--latency-ms",
    type=_SECONDS,
    default=0,
    show_default=True,
    help="Delay before every response, in milliseconds.",
)
@click.option(
    "--processing-seconds",
    type=_SECONDS,
    default=_DEFAULTS.processing_seconds,
    show_default=True,
    help="Seconds a charge stays Processing before Success or Cancel.",
)
@click.option(
    "--cancel-rate",
    type=_RATE,
    default=0,
    show_default=True,
    help="Share of charges that end in Cancel (refunded), 0 to 1.",
)
@click.option(
    "--no-dedupe",
    is_flag=True,
    help="Charge a repeated trxid again instead of repeating its first response.",
)
@click.option(
    "--webhook-url", help="Loopback URL that receives a push on each status change."
)
@click.option(
    "--webhook-token",
    envvar="STU_WEBHOOK_TOKEN",
    show_envvar=True,
    help="Token sent in the x-webhook-token header of each push.",
)
@click.option(
    "--webhook-duplicate",
    type=_RATE,
    default=0,
    show_default=True,
    help="Share of pushes sent twice, 0 to 1.",
)
@click.option(
    "--webhook-reorder",
    type=_RATE,
    default=0,
    show_default=True,
    help="Share of charges whose Processing push comes after the final one, 0 to 1.",
)
@click.option(
    "--webhook-forge",
    type=_RATE,
    default=0,
    show_default=True,
    help="Share of charges that also get a forged Success push with a "
    "wrong token, 0 to 1.",
)
@click.option(
    "--seed",
    type=int,
    help="Seed that makes fault, cancel and webhook draws reproducible.",
)
@click.option(
    "--slow-seconds",
    type=_SECONDS,
    default=_DEFAULTS.slow_seconds,
    show_default=True,
    help="Seconds that slow-after-charge delays its response.",
)
@click.option(
    "--status-lag-seconds",
    type=_SECONDS,
    default=_DEFAULTS.status_lag_seconds,
    show_default=True,
    help="Seconds that status-lag hides a charge from /api/status.",
)
@click.option(
    "--retry-after",
    type=_SECONDS,
    default=_DEFAULTS.retry_after,
    show_default=True,
    help="Retry-After value of a 429 response, in seconds.",
)
@click.option(
    "--fault",
    "faults",
    metavar="NAME=RATE",
    multiple=True,
    callback=_parse_faults,
    help="Inject a fault into a share of recharge and bill requests; "
    "repeatable, the shares are disjoint in the order given.",
)
def sandbox_serve_command(
    port: int,
    state_path: Path | None,
    balance: int,
    drive_balance: int,
    latency_ms: float,
    processing_seconds: float,
    cancel_rate: float,
    no_dedupe: bool,
    webhook_url: str | None,
    webhook_token: str | None,
    webhook_duplicate: float,
    webhook_reorder: float,
    webhook_forge: float,
    seed: int | None,
    slow_seconds: float,
    status_lag_seconds: float,
    retry_after: float,
    faults: tuple[tuple[str, float], ...],
) -> None:
    """Run the local Success TopUp sandbox on 127.0.0.1 until interrupted.

    The first line printed is "listening on http://127.0.0.1:PORT". When
    STU_KEY and STU_SECRET are set, only those credentials are accepted;
    otherwise any non-empty pair is.
    """
    config = SandboxConfig(
        port=port,
        state_path=state_path,
        balance=balance,
        drive_balance=drive_balance,
        latency_ms=latency_ms,
        processing_seconds=processing_seconds,
        cancel_rate=cancel_rate,
        dedupe=not no_dedupe,
        webhook_url=webhook_url,
        webhook_token=webhook_token,
        webhook_duplicate=webhook_duplicate,
        webhook_reorder=webhook_reorder,
        webhook_forge=webhook_forge,
        seed=seed,
        slow_seconds=slow_seconds,
        status_lag_seconds=status_lag_seconds,
        retry_after=retry_after,
        faults=faults,
        key=os.environ.get("STU_KEY") or None,
        secret=os.environ.get("STU_SECRET") or None,
    )
    try:
        serve_sandbox(config)
    except BulkTopupError as error:
        click.echo(f"Error: {error.message}", err=True)
        raise click.exceptions.Exit(error.exit_code) from error
