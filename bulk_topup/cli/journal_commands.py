"""Commands that read or hand-settle the journal: batches, show, report, resolve.

None of them take the journal's lock: they rely on WAL to read while a run
writes, and ``resolve`` writes one transaction.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..journal import Batch, Journal
from ..models import State
from ..reports import FORMATS, default_report_path, summarize, write_report
from . import Output, cli, common_options, handles_errors, settings_from


def _open_journal(options: dict[str, Any]) -> Journal:
    settings = settings_from(options, sandbox=options.get("sandbox", False))
    if not settings.journal_path.exists():
        raise ConfigError(
            f"No journal at {settings.journal_path}: nothing has been run yet. "
            "Give the journal with --journal, or add --sandbox for sandbox runs."
        )
    return Journal.open(settings.journal_path)


def _get_batch(journal: Journal, batch_id: str) -> Batch:
    batch = journal.get_batch(batch_id)
    if batch is None:
        raise ConfigError(
            f"No batch {batch_id} in {journal.path}. "
            "List batches with: bulk-topup batches"
        )
    return batch


@cli.command()
@click.option("--sandbox", is_flag=True, help="List the sandbox journal's batches.")
@common_options
@handles_errors
def batches(**options: Any) -> None:
    """List batches with their progress, oldest first.

    \b
    Examples:
        bulk-topup batches
        bulk-topup batches --sandbox --json
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    with _open_journal(options) as journal:
        items = []
        for batch in journal.list_batches():
            summary = summarize(journal, batch)
            items.append(
                {
                    "batch_id": batch.batch_id,
                    "file": batch.file,
                    "kind": batch.kind,
                    "created_at": batch.created_at,
                    "counts": summary["counts"],
                    "total_amount": sum(summary["taka"].values()),
                }
            )
    if output.as_json:
        output.document({"batches": items})
        return
    if not items:
        output.say("No batches yet.")
    for item in items:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(item["counts"].items()))
        output.say(f"{item['batch_id']}  {item['created_at']}  {counts}")


@cli.command()
@click.argument("batch")
@click.option("--state", "states", help="Only rows in these states (comma-separated).")
@click.option("--sandbox", is_flag=True, help="Read the sandbox journal.")
@common_options
@handles_errors
def show(**options: Any) -> None:
    """Show one batch's summary and its rows.

    \b
    Examples:
        bulk-topup show payouts-20261204-1a2b3c4d
        bulk-topup show payouts-20261204-1a2b3c4d --state review,unknown
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    wanted = _parse_states(options["states"])
    with _open_journal(options) as journal:
        batch = _get_batch(journal, options["batch"])
        summary = summarize(journal, batch)
        rows = journal.transactions(batch.batch_id, wanted)
    if output.as_json:
        output.document(
            {
                "summary": summary,
                "rows": [{**tx.__dict__, "state": tx.state.value} for tx in rows],
            }
        )
        return
    counts = ", ".join(f"{s} {n}" for s, n in sorted(summary["counts"].items()))
    output.say(f"Batch {batch.batch_id} from {batch.file}: {counts}.")
    for tx in rows:
        output.say(
            f"  row {tx.source_row}: {tx.trxid} {tx.state.value} "
            f"{tx.amount or ''} {tx.message or tx.reason or ''}".rstrip()
        )


def _parse_states(text: str | None) -> list[State] | None:
    if not text:
        return None
    states = []
    for name in text.split(","):
        try:
            states.append(State(name.strip().lower()))
        except ValueError:
            known = ", ".join(state.value for state in State)
            raise ConfigError(f"Unknown state {name!r}; use one of: {known}.") from None
    return states


@cli.command()
@click.argument("batch")
@click.option(
    "--format",
    "formats",
    default="csv",
    show_default=True,
    help=f"Formats, comma-separated: {', '.join(FORMATS)}.",
)
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(path_type=Path),
    help="File (one format) or folder (several formats).",
)
@click.option("--sandbox", is_flag=True, help="Read the sandbox journal.")
@common_options
@handles_errors
def report(**options: Any) -> None:
    """Export a batch's reconciliation report.

    \b
    Examples:
        bulk-topup report payouts-20261204-1a2b3c4d -o payouts.csv
        bulk-topup report payouts-20261204-1a2b3c4d --format csv,json,xlsx -o out/
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    formats = [name.strip().lower() for name in options["formats"].split(",")]
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ConfigError(
            f"Unknown report format {unknown[0]!r}; use {', '.join(FORMATS)}."
        )
    written = []
    with _open_journal(options) as journal:
        batch = _get_batch(journal, options["batch"])
        for name in formats:
            path = _report_path(options["output_path"], batch, name, len(formats))
            written.append(write_report(journal, batch, path, name))
    if output.as_json:
        output.document({"reports": [str(path) for path in written]})
    for path in written:
        output.say(f"Report: {path}")
    sys.exit(0)


def _report_path(given: Path | None, batch: Batch, name: str, count: int) -> Path:
    if given is None:
        return default_report_path(Path.cwd(), batch.batch_id, name)
    if count == 1 and not given.is_dir():
        return given
    return default_report_path(given, batch.batch_id, name)


# The resolution that each status answer, recorded while in review, allows.
_STATUS_RESOLUTIONS = {"Success": State.SUCCESS, "Cancel": State.CANCELLED}


def _check_against_status(trxid: str, status: str | None, wanted: State) -> None:
    allowed = _STATUS_RESOLUTIONS.get(status or "")
    if allowed is not None and allowed is not wanted:
        raise ConfigError(
            f"Status returned {status} for {trxid} after it went to review; "
            f"resolve it --as {allowed.value}, or ask the provider why."
        )


_RESOLUTIONS = {
    "success": State.SUCCESS,
    "cancelled": State.CANCELLED,
    "failed": State.FAILED,
}


@cli.command()
@click.argument("trxid")
@click.option(
    "--as",
    "resolution",
    type=click.Choice(sorted(_RESOLUTIONS)),
    required=True,
    help="The outcome the provider confirmed.",
)
@click.option("--note", required=True, help="Why: who confirmed it, and how.")
@click.option("--sandbox", is_flag=True, help="Use the sandbox journal.")
@common_options
@handles_errors
def resolve(**options: Any) -> None:
    """Settle a row in review by hand, after checking with the provider.

    Only rows in `review` can be resolved; the note is kept in the journal
    and the report.

    \b
    Examples:
        bulk-topup resolve BK4K2JX... --as success --note "support ticket 881"
        bulk-topup resolve BK4K2JX... --as failed --note "provider has no record"
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    note = options["note"].strip()
    if not note:
        raise ConfigError("--note must say why the row is resolved this way.")
    with _open_journal(options) as journal:
        tx = journal.get(options["trxid"])
        if tx is None:
            raise ConfigError(f"No transaction {options['trxid']} in {journal.path}.")
        if tx.state is not State.REVIEW:
            raise ConfigError(
                f"{tx.trxid} is {tx.state.value}, not review: only rows in review "
                "are resolved by hand. Use `bulk-topup reconcile` for open rows."
            )
        new_state = _RESOLUTIONS[options["resolution"]]
        _check_against_status(tx.trxid, tx.provider_status, new_state)
        journal.transition(
            tx.trxid,
            new_state,
            cause=f"resolved by hand: {note}",
            fields={"resolution_note": note, "reason": "resolved_by_hand"},
        )
    if output.as_json:
        output.document({"trxid": tx.trxid, "state": new_state.value, "note": note})
        return
    output.say(f"{tx.trxid}: review -> {new_state.value} ({note}).")
