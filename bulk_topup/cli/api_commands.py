"""Single API calls for people and scripts, and the sandbox server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import click

from ..client import Balance, TopupClient
from ..config import Settings, require_credentials
from ..planning import normalise_base_url
from . import Output, cli, common_options, handles_errors, settings_from

T = TypeVar("T")


@contextlib.contextmanager
def _base_url(settings: Settings) -> Iterator[str]:
    if not settings.sandbox:
        yield normalise_base_url(settings.base_url)
        return
    from ..sandbox import SandboxConfig, start_sandbox

    if settings.sandbox_ledger is not None:
        settings.sandbox_ledger.parent.mkdir(parents=True, exist_ok=True)
    with start_sandbox(SandboxConfig(state_path=settings.sandbox_ledger)) as sandbox:
        yield sandbox.url


def _call(settings: Settings, call: Callable[[TopupClient], Awaitable[T]]) -> T:
    async def run(base_url: str) -> T:
        client = TopupClient(base_url, require_credentials(settings), concurrency=1)
        try:
            return await call(client)
        finally:
            await client.aclose()

    with _base_url(settings) as base_url:
        return asyncio.run(run(base_url))


def fetch_balance(settings: Settings) -> Balance:
    """Return the account's balances from the settings' target."""
    return _call(settings, lambda client: client.balance())


@cli.command()
@click.option("--sandbox", is_flag=True, help="Ask the built-in sandbox.")
@common_options
@handles_errors
def balance(**options: Any) -> None:
    """Print the account's main and drive balances.

    \b
    Examples:
        bulk-topup balance
        bulk-topup balance --json
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options, sandbox=options["sandbox"])
    result = fetch_balance(settings)
    if output.as_json:
        output.document(
            {"balance": str(result.balance), "drive_balance": str(result.drive_balance)}
        )
        return
    output.say(
        f"Balance: {result.balance} Taka; drive balance: {result.drive_balance} Taka."
    )


@cli.command()
@click.option("--operator", help="Only this operator's offers (GP RB AT TT BL ALL).")
@click.option(
    "--type", "offer_type", type=click.Choice(["regular", "drive"]), help="Offer type."
)
@click.option("--sandbox", is_flag=True, help="Ask the built-in sandbox.")
@common_options
@handles_errors
def offers(**options: Any) -> None:
    """List the drive and bundle offers that package_id refers to.

    \b
    Examples:
        bulk-topup offers --operator GP
        bulk-topup offers --type drive --json
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options, sandbox=options["sandbox"])
    items = _call(
        settings,
        lambda client: client.offers(options["operator"], options["offer_type"]),
    )
    if output.as_json:
        output.document({"offers": items})
        return
    for item in items:
        output.say("  ".join(f"{name}={value}" for name, value in item.items()))


@cli.command()
@click.argument("trxid")
@click.option("--sandbox", is_flag=True, help="Ask the built-in sandbox.")
@common_options
@handles_errors
def status(**options: Any) -> None:
    """Ask the API for one trxid's status.

    \b
    Examples:
        bulk-topup status BK4K2J...
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options, sandbox=options["sandbox"])
    answer = _call(settings, lambda client: client.status(options["trxid"]))
    if output.as_json:
        output.document(
            {
                "trxid": options["trxid"],
                "status": answer.status,
                "message": answer.message,
            }
        )
        return
    output.say(
        f"{options['trxid']}: {answer.status or 'not found'} {answer.message}".rstrip()
    )


@cli.group()
def sandbox() -> None:
    """Run the local Success TopUp sandbox."""


def _attach_sandbox_serve() -> None:
    from ..sandbox.command import sandbox_serve_command

    sandbox.add_command(sandbox_serve_command, name="serve")


_attach_sandbox_serve()
