"""The command line: help, errors as one line, exit codes, JSON documents."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import numbered_rows, write_csv

from bulk_topup.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def command_names(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            names.extend(command_names(command, f"{prefix}{name} "))
        else:
            names.append(f"{prefix}{name}")
    return names


COMMANDS = command_names(cli)


@pytest.mark.parametrize("name", COMMANDS, ids=COMMANDS)
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


@pytest.mark.parametrize("name", COMMANDS, ids=COMMANDS)
def test_every_command_in_readme(name: str) -> None:
    assert f"`{name}" in README.read_text(encoding="utf-8")


def test_missing_file_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.csv")])
    assert result.exit_code == 65
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "nope.csv" in result.output


def test_missing_file_json_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.csv"), "--json"])
    document = json.loads(result.stdout)
    assert result.exit_code == 65
    assert document["error"]["code"] == "file_not_found"
    assert document["reason"] == "file_not_found"


def test_validate_valid_file_exits_zero(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(3))
    result = CliRunner().invoke(cli, ["validate", str(batch)])
    assert result.exit_code == 0
    assert "3 valid" in result.output


def test_validate_rejects_exit_65(tmp_path: Path) -> None:
    rows = numbered_rows(3)
    rows[1][3] = "fifty"
    batch = write_csv(tmp_path / "b.csv", rows)
    rejects = tmp_path / "rejects.csv"
    result = CliRunner().invoke(
        cli, ["validate", str(batch), "--rejects", str(rejects)]
    )
    assert result.exit_code == 65
    assert "row 3" in result.output
    assert "fifty" in result.output
    assert "invalid_amount" in rejects.read_text(encoding="utf-8-sig")


def test_validate_duplicates_exit_zero(tmp_path: Path) -> None:
    rows = numbered_rows(2)
    rows.append(list(rows[0]))
    batch = write_csv(tmp_path / "b.csv", rows)
    result = CliRunner().invoke(cli, ["validate", str(batch), "--json"])
    document = json.loads(result.stdout)
    assert result.exit_code == 0
    assert document["rows"][2]["reasons"] == ["duplicate_row"]
    assert document["rows"][2]["duplicate_of"] == 2


def test_run_without_terminal_needs_yes(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(2))
    result = CliRunner().invoke(
        cli, ["run", str(batch), "--sandbox", "--journal", str(tmp_path / "j.sqlite")]
    )
    assert result.exit_code == 2
    assert "--yes" in result.output
    assert journaled_batches(tmp_path / "j.sqlite") == []


def journaled_batches(path: Path) -> list[str]:
    if not path.exists():
        return []
    connection = sqlite3.connect(path)
    batches = [row[0] for row in connection.execute("SELECT batch_id FROM batches")]
    connection.close()
    return batches


def test_unknown_report_suffix_refused_first(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(2))
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(batch),
            "--sandbox",
            "--yes",
            "--report",
            str(tmp_path / "r.txt"),
            "--journal",
            str(tmp_path / "j.sqlite"),
        ],
    )
    assert result.exit_code == 2
    assert ".csv" in result.output
    assert not (tmp_path / "j.sqlite").exists()


def test_max_total_refuses_plan(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(5))
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(batch),
            "--sandbox",
            "--yes",
            "--max-total",
            "20",
            "--journal",
            str(tmp_path / "j.sqlite"),
        ],
    )
    assert result.exit_code == 65
    assert "--max-total" in result.output
    assert not (tmp_path / "j.sqlite").exists()


def test_max_rows_refuses_plan(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(5))
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(batch),
            "--sandbox",
            "--yes",
            "--max-rows",
            "4",
            "--journal",
            str(tmp_path / "j.sqlite"),
        ],
    )
    assert result.exit_code == 65
    assert "--max-rows" in result.output


def test_bad_option_is_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "x.csv", "--rate", "fast"])
    assert result.exit_code == 2


def test_show_unknown_batch_names_fix(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1))
    journal = tmp_path / "j.sqlite"
    CliRunner().invoke(
        cli, ["run", str(batch), "--sandbox", "--yes", "--journal", str(journal)]
    )
    result = CliRunner().invoke(cli, ["show", "nope", "--journal", str(journal)])
    assert result.exit_code == 2
    assert "bulk-topup batches" in result.output


@pytest.mark.parametrize(
    "batch_id", ["", "../../etc/x", "a\nb"], ids=["empty", "path", "newline"]
)
def test_unsafe_batch_id_refused(tmp_path: Path, batch_id: str) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1))
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(batch),
            "--sandbox",
            "--yes",
            "--batch-id",
            batch_id,
            "--journal",
            str(tmp_path / "j.sqlite"),
        ],
    )
    assert result.exit_code == 2
    assert "Invalid batch id" in result.output


def test_nan_rate_refused(tmp_path: Path) -> None:
    batch = write_csv(tmp_path / "b.csv", numbered_rows(1))
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(batch),
            "--sandbox",
            "--yes",
            "--rate",
            "nan",
            "--journal",
            str(tmp_path / "j.sqlite"),
        ],
    )
    assert result.exit_code == 2
