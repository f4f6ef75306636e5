"""Commands that take a batch file or a batch: validate, plan, run, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..journal import Journal
from ..models import AmountPolicy, RejectedRow
from ..planning import PlanOptions, preview_plan, target_of, validate_batch_id
from ..reading import read_batch
from ..reports import check_report_path
from ..runner import (
    RunRequest,
    RunResult,
    reconcile_batch,
    resume_batch,
    run_file,
)
from ..sender import SendSettings
from ..validation import (
    describe_validation,
    format_problems,
    validate_table,
    write_rejects,
)
from . import Output, cli, common_options, handles_errors, settings_from

FILE = click.Path(exists=False, dir_okay=False, path_type=Path)


def _policy(base: AmountPolicy, split_above: int | None) -> AmountPolicy:
    return AmountPolicy(
        minimum=base.minimum,
        operator_minimums=base.operator_minimums,
        operator_maximums=base.operator_maximums,
        split_above=split_above,
    )


@cli.command()
@click.argument("file", type=FILE)
@click.option(
    "--sheet", help="Spreadsheet sheet to read (default: the first with a header)."
)
@click.option("--rejects", type=FILE, help="Write the rejected rows to this CSV file.")
@click.option(
    "--limit", type=click.IntRange(min=0), help="List at most N rejected rows."
)
@click.option(
    "--split-above", type=click.IntRange(min=1), help="Split amounts above N Taka."
)
@common_options
@handles_errors
def validate(**options: Any) -> None:
    """Read, normalise and check a batch file; send nothing.

    Exits 0 when every row is valid, skipped or only a duplicate, 65 otherwise.

    \b
    Examples:
        bulk-topup validate payouts.csv
        bulk-topup validate payouts.xlsx --sheet March --rejects fix-me.csv
        bulk-topup validate payouts.csv --json
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options)
    table = read_batch(options["file"], sheet=options["sheet"])
    validation = validate_table(table, _policy(settings.policy, options["split_above"]))
    document = describe_validation(validation)
    blocking = [row for row in validation.rows if isinstance(row, RejectedRow)]
    if options["rejects"]:
        write_rejects(validation, options["rejects"])
    if output.as_json:
        output.document(document)
    else:
        _print_validation(output, document, validation, options["limit"])
    sys.exit(65 if blocking else 0)


def _print_validation(
    output: Output, document: dict[str, Any], validation: Any, limit: int | None
) -> None:
    totals = document["totals"]
    output.say(
        f"{document['file']}: {totals['valid']} valid, {totals['rejected']} "
        f"rejected, {totals['skipped']} skipped ({document['format']}, "
        f"header on row {document['header_row']})."
    )
    reasons: Counter[str] = Counter()
    for row in document["rows"]:
        reasons.update(row.get("reasons", []))
    for reason, count in sorted(reasons.items()):
        output.say(f"  {reason}: {count}")
    for line in format_problems(validation, limit=limit):
        output.say(line)


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _request(options: dict[str, Any], policy: AmountPolicy) -> RunRequest:
    if options.get("report") is not None:
        check_report_path(options["report"])
    if options.get("batch_id") is not None:
        validate_batch_id(options["batch_id"])
    rate = options.get("rate")
    if rate is not None and not math.isfinite(rate):
        raise ConfigError(f"Invalid --rate {rate}: give a number of requests a second.")
    return RunRequest(
        plan=PlanOptions(
            skip_invalid=options.get("skip_invalid", False),
            allow_duplicates=options.get("allow_duplicates", False),
            allow_repeat=options.get("allow_repeat", False),
            policy=_policy(policy, options.get("split_above")),
        ),
        send=SendSettings(
            rate=_default(options.get("rate"), 10.0),
            concurrency=_default(options.get("concurrency"), 8),
            same_number_gap=_default(options.get("same_number_gap"), 0.0),
            allow_repeat=options.get("allow_repeat", False),
        ),
        settle_timeout=_default(options.get("settle_timeout"), 600.0),
        no_settle=options.get("no_settle", False),
        allow_partial=options.get("allow_partial", False),
        yes=options.get("yes", False),
        batch_id=options.get("batch_id"),
        sheet=options.get("sheet"),
        max_total=options.get("max_total"),
        max_rows=options.get("max_rows"),
        report_path=options.get("report"),
        quiet=options.get("quiet", False),
    )


def sending_options(command: Any) -> Any:
    """Add the options of ``run`` and ``resume``."""
    options = [
        click.option(
            "--rate",
            type=click.FloatRange(min=0.01),
            help="Requests per second (default 10).",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(min=1),
            help="Requests in flight at once (default 8).",
        ),
        click.option(
            "--sandbox",
            is_flag=True,
            help="Run against the built-in sandbox, with its own journal.",
        ),
        click.option(
            "--yes", "-y", is_flag=True, help="Send without asking for confirmation."
        ),
        click.option(
            "--allow-partial",
            is_flag=True,
            help="Send what the balance covers; hold the rest.",
        ),
        click.option(
            "--no-settle", is_flag=True, help="Do not poll status after sending."
        ),
        click.option(
            "--settle-timeout",
            type=click.FloatRange(min=0),
            help="Seconds to poll status after sending (default 600).",
        ),
        click.option("--report", type=FILE, help="Write the CSV report here."),
        click.option(
            "--same-number-gap",
            type=click.FloatRange(min=0),
            help="Seconds between rows for one number.",
        ),
        click.option(
            "--on-finish",
            help="Command to run with the summary JSON on its standard input.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def plan_options(command: Any) -> Any:
    """Add the options that change a plan."""
    options = [
        click.option("--sheet", help="Spreadsheet sheet to read."),
        click.option(
            "--batch-id", help="Use this batch id instead of the file's identity."
        ),
        click.option(
            "--skip-invalid",
            is_flag=True,
            help="Send the valid rows; report the rest as invalid.",
        ),
        click.option(
            "--allow-duplicates", is_flag=True, help="Send repeated equal rows too."
        ),
        click.option(
            "--allow-repeat",
            is_flag=True,
            help="Send rows that another batch paid recently.",
        ),
        click.option(
            "--split-above",
            type=click.IntRange(min=1),
            help="Split amounts above N Taka into parts.",
        ),
        click.option(
            "--max-total",
            type=click.IntRange(min=1),
            help="Refuse a batch above this many Taka.",
        ),
        click.option(
            "--max-rows",
            type=click.IntRange(min=1),
            help="Refuse a batch above this many rows.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError(
            "Confirmation needed but there is no terminal: add --yes to send."
        )
    return click.confirm(question, default=False)


def report_result(output: Output, result: RunResult, on_finish: str | None) -> None:
    """Print a run's result and exit with its code."""
    if output.as_json:
        output.document(result.to_json())
    for line in result.problems:
        output.say(line)
    for line in result.messages:
        output.say(line)
    summary = result.summary
    if summary:
        counts = ", ".join(
            f"{state} {count}" for state, count in sorted(summary["counts"].items())
        )
        output.say(f"Batch {result.batch_id}: {counts}.")
        output.say(f"Taka sent successfully: {summary['success_taka']}.")
    if result.report_path:
        output.say(f"Report: {result.report_path}")
    if on_finish:
        _run_on_finish(on_finish, result)
    sys.exit(result.exit_code)


ON_FINISH_TIMEOUT = 60.0
# The hook is the user's own program, but it needs no API credentials.
_PRIVATE_VARIABLES = ("STU_KEY", "STU_SECRET", "STU_WEBHOOK_TOKEN")


def _run_on_finish(command: str, result: RunResult) -> None:
    document = json.dumps(result.to_json(), default=str)
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in _PRIVATE_VARIABLES
    }
    try:
        completed = subprocess.run(  # noqa: S602 - the user's own command
            command,
            shell=True,
            input=document,
            text=True,
            check=False,
            env=environment,
            timeout=ON_FINISH_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        click.echo(
            f"Warning: --on-finish command still running after "
            f"{ON_FINISH_TIMEOUT:.0f} seconds; stopped it.",
            err=True,
        )
        return
    if completed.returncode != 0:
        click.echo(
            f"Warning: --on-finish command exited {completed.returncode}.", err=True
        )


@cli.command()
@click.argument("file", type=FILE)
@plan_options
@sending_options
@common_options
@handles_errors
def run(**options: Any) -> None:
    """Plan, journal, send, settle and report a batch file.

    Running the same file again resumes its batch and never pays a row twice.

    \b
    Examples:
        bulk-topup run payouts.csv --sandbox --yes
        bulk-topup run payouts.csv --skip-invalid --rate 5 --yes
        bulk-topup run payouts.xlsx --max-total 200000 --report out.csv
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options, sandbox=options["sandbox"])
    request = _request(options, settings.policy)
    result = run_file(settings, options["file"], request, _confirm)
    report_result(output, result, options["on_finish"])


@cli.command()
@click.argument("batch", required=False)
@sending_options
@common_options
@handles_errors
def resume(**options: Any) -> None:
    """Continue an interrupted batch from the journal (the last one by default).

    Rows that were in flight are settled through status first; rows never
    sent are sent; the plan options are the batch's own.

    \b
    Examples:
        bulk-topup resume --yes
        bulk-topup resume payouts-20261204-1a2b3c4d --sandbox --yes
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options, sandbox=options["sandbox"])
    request = _request(options, settings.policy)
    result = resume_batch(settings, options["batch"], request, _confirm)
    report_result(output, result, options["on_finish"])


@cli.command()
@click.argument("batch", required=False)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to keep polling.",
)
@click.option("--sandbox", is_flag=True, help="Use the sandbox journal.")
@click.option(
    "--rate", type=click.FloatRange(min=0.01), help="Requests per second (default 10)."
)
@common_options
@handles_errors
def reconcile(**options: Any) -> None:
    """Settle a batch's open rows through status until final or --timeout.

    \b
    Examples:
        bulk-topup reconcile
        bulk-topup reconcile payouts-20261204-1a2b3c4d --timeout 120
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options, sandbox=options["sandbox"])
    request = _request(
        {**options, "settle_timeout": options["timeout"]}, settings.policy
    )
    result = reconcile_batch(settings, options["batch"], request)
    report_result(output, result, None)


@cli.command()
@click.argument("file", type=FILE)
@plan_options
@click.option("--sandbox", is_flag=True, help="Plan against the sandbox journal.")
@common_options
@handles_errors
def plan(**options: Any) -> None:
    """Show the transactions that run would send, without sending.

    \b
    Examples:
        bulk-topup plan payouts.csv
        bulk-topup plan payouts.csv --split-above 1000 --json
    """
    output = Output(as_json=options["as_json"], quiet=options["quiet"])
    settings = settings_from(options, sandbox=options["sandbox"])
    request = _request(options, settings.policy)
    table = read_batch(options["file"], sheet=options["sheet"])
    validation = validate_table(table, request.plan.policy)
    journal = (
        Journal.open(settings.journal_path) if settings.journal_path.exists() else None
    )
    preview = preview_plan(
        journal,
        validation,
        target=target_of(settings.base_url, sandbox=settings.sandbox),
        options=request.plan,
        batch_id=request.batch_id,
        prefix=settings.trxid_prefix,
        repeat_window_hours=settings.repeat_window_hours,
    )
    balance = _plan_balance(settings)
    _print_plan(output, preview, balance)
    invalid = [row for row in validation.rows if isinstance(row, RejectedRow)]
    sys.exit(65 if invalid and not request.plan.skip_invalid else 0)


def _plan_balance(settings: Any) -> Any:
    """Return the account's balance when credentials exist, else None."""
    if settings.credentials is None:
        return None
    from .api_commands import fetch_balance

    return fetch_balance(settings)


def _print_plan(output: Output, preview: Any, balance: Any) -> None:
    rows = preview.transactions
    to_send = [row for row in rows if row["state"] in ("planned", "held")]
    totals: Counter[tuple[str, str]] = Counter()
    for row in to_send:
        totals[(row["operator"], row["type"])] += row["amount"]
    held = Counter(
        row["state"] for row in rows if row["state"] not in ("planned", "held")
    )
    document = {
        "batch_id": preview.batch_id,
        "existing": preview.existing is not None,
        "to_send": len(to_send),
        "total_amount": sum(totals.values()),
        "totals": [
            {"operator": op, "type": type_, "amount": amount}
            for (op, type_), amount in sorted(totals.items())
        ],
        "held_back": dict(held),
        "balance": None if balance is None else str(balance.balance),
        "balance_covers_total": None
        if balance is None
        else balance.balance >= sum(totals.values()),
        "transactions": [
            {
                name: row.get(name)
                for name in (
                    "trxid",
                    "source_row",
                    "part",
                    "number",
                    "operator",
                    "type",
                    "amount",
                    "package_id",
                    "reference",
                    "state",
                    "repeat_of",
                    "duplicate_of",
                )
            }
            for row in rows
        ],
    }
    if output.as_json:
        output.document(document)
        return
    state = "already in the journal" if preview.existing else "new"
    output.say(
        f"Batch {preview.batch_id} ({state}): {len(to_send)} to send, "
        f"{document['total_amount']} Taka."
    )
    for item in document["totals"]:
        output.say(f"  {item['operator']} {item['type']}: {item['amount']} Taka")
    for name, count in sorted(held.items()):
        output.say(f"  held back as {name}: {count}")
    if balance is not None:
        verdict = "covers" if document["balance_covers_total"] else "does NOT cover"
        output.say(f"  balance {balance.balance} Taka {verdict} the total.")
    for row in document["transactions"]:
        output.say(
            f"  row {row['source_row']}: {row['trxid']} {row['number'] or ''} "
            f"{row['operator'] or ''} {row['amount'] or ''} {row['state']}"
        )
