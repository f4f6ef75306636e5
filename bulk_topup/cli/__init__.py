"""The ``bulk-topup`` command: parse options, call one function, print, exit.

Every error that bulk-topup raises on purpose is a ``BulkTopupError``; it is
caught once, in ``main``, and printed as one line (or as ``{"error": ...}``
with ``--json``) with its exit code. ``--traceback`` shows the traceback too.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__
from ..config import Settings, resolve_settings
from ..errors import BulkTopupError

F = TypeVar("F", bound=Callable[..., Any])


class Output:
    """The output of a command: machine JSON on stdout, text for people."""

    def __init__(self, *, as_json: bool, quiet: bool) -> None:
        self.as_json = as_json
        self.quiet = quiet

    def say(self, text: str) -> None:
        """Print text for a person: on stderr when stdout carries JSON."""
        if not self.quiet:
            click.echo(text, err=self.as_json)

    def document(self, data: Any) -> None:
        """Print the one JSON document of a ``--json`` command."""
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def common_options(command: F) -> F:
    """Add the options every command shares."""
    options = [
        click.option(
            "--journal",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Journal file (default: in the user data directory; "
            "env BULK_TOPUP_JOURNAL).",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML config file (default: in the user config directory).",
        ),
        click.option("--base-url", help="API base URL (env STU_BASE_URL)."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout."),
        click.option("-q", "--quiet", is_flag=True, help="Print only errors."),
        click.option("-v", "--verbose", count=True, help="Log more (-vv: debug)."),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Also write a DEBUG log to this file.",
        ),
        click.option("--traceback", is_flag=True, hidden=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _configure_logging(verbose: int, quiet: bool, log_file: Path | None) -> None:
    level = logging.ERROR if quiet else logging.WARNING - 10 * min(verbose, 2)
    root = logging.getLogger("bulk_topup")
    root.setLevel(logging.DEBUG)
    root.handlers.clear()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
        root.addHandler(handler)


def handles_errors(command: F) -> F:
    """Turn bulk-topup errors into one line and their exit code."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        output = Output(as_json=kwargs.get("as_json", False), quiet=False)
        show_traceback = kwargs.pop("traceback", False)
        _configure_logging(
            kwargs.pop("verbose", 0),
            kwargs.get("quiet", False),
            kwargs.pop("log_file", None),
        )
        try:
            return command(**kwargs)
        except BulkTopupError as error:
            if show_traceback:
                raise
            if output.as_json:
                output.document(
                    {
                        "reason": error.code,
                        "exit_code": error.exit_code,
                        "error": {"code": error.code, "message": error.message},
                    }
                )
            click.echo(f"Error: {error.message}", err=True)
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


def settings_from(kwargs: dict[str, Any], *, sandbox: bool = False) -> Settings:
    """Resolve settings from the shared options."""
    return resolve_settings(
        journal=kwargs.get("journal"),
        config_path=kwargs.get("config_path"),
        base_url=kwargs.get("base_url"),
        sandbox=sandbox,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulk-topup")
def cli() -> None:
    """Send mobile recharges in bulk through the Success TopUp API.

    \b
    Try it with no account, against the built-in sandbox:
        bulk-topup validate sample_batches/reseller-batch.csv
        bulk-topup run sample_batches/reseller-batch.csv --sandbox --skip-invalid
        bulk-topup batches --sandbox
    """


def main() -> None:
    """Run the command line."""
    cli(prog_name="bulk-topup")


# The commands live in modules by theme; importing them attaches them.
from . import api_commands, batch_commands, journal_commands  # noqa: E402,F401
