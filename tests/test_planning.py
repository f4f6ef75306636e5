"""Planning: trxids, batch identity, supersession and the repeat guard."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from bulk_topup.errors import PlanRefused
from bulk_topup.journal import Journal
from bulk_topup.models import SourceTable, State, Validation, ValidRow
from bulk_topup.planning import (
    DHAKA,
    PlanOptions,
    find_repeat,
    make_trxid,
    plan_batch,
    preview_plan,
)

NOON = datetime(2026, 12, 4, 12, 0, tzinfo=DHAKA)


def validation_of(rows: list[ValidRow], name: str = "payouts.csv") -> Validation:
    table = SourceTable(path=name, format="csv", header=(), records=(), header_row=1)
    return Validation(table=table, rows=tuple(rows))


def row(source_row: int, number: str, amount: int = 50, **extra: object) -> ValidRow:
    return ValidRow(
        source_row=source_row,
        number=number,
        operator="GP",
        type="prepaid",
        amount=amount,
        parts=(amount,),
        **extra,  # type: ignore[arg-type]
    )


ROWS = [row(2, "01711000001"), row(3, "01711000002", 20), row(4, "01711000003", 30)]


def trxids_of(journal: Journal, batch_id: str) -> dict[str, str]:
    return {tx.number or "": tx.trxid for tx in journal.transactions(batch_id)}


def test_trxid_shape_and_length() -> None:
    trxid = make_trxid("BK", "sandbox", "20261204|abc", "row|x|1", 1, 1)
    assert len(trxid) == 24
    assert re.fullmatch(r"BK[A-Z2-7]{22}", trxid)


def test_trxid_changes_with_generation() -> None:
    first = make_trxid("BK", "sandbox", "b", "r", 1, 1)
    second = make_trxid("BK", "sandbox", "b", "r", 1, 2)
    assert first != second


def test_reordering_rows_keeps_trxids(tmp_path: Path) -> None:
    one = Journal.open(tmp_path / "one.sqlite")
    two = Journal.open(tmp_path / "two.sqlite")
    a = plan_batch(
        one, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    b = plan_batch(
        two,
        validation_of(list(reversed(ROWS)), "renamed.csv"),
        target="sandbox",
        options=PlanOptions(),
        now=NOON,
    )
    assert trxids_of(one, a.batch.batch_id) == trxids_of(two, b.batch.batch_id)


def test_same_rows_other_name_resume(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    first = plan_batch(
        journal, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    again = plan_batch(
        journal,
        validation_of(ROWS, "other.csv"),
        target="sandbox",
        options=PlanOptions(),
        now=NOON,
    )
    assert first.created
    assert not again.created
    assert again.batch.batch_id == first.batch.batch_id


def test_batch_id_names_file_and_day(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    result = plan_batch(
        journal, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    assert re.fullmatch(r"payouts-20261204-[0-9a-f]{8}", result.batch.batch_id)


def test_other_target_is_other_batch(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    a = plan_batch(
        journal, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    b = plan_batch(
        journal,
        validation_of(ROWS),
        target="http://127.0.0.1:1",
        options=PlanOptions(),
        now=NOON,
    )
    assert b.created
    assert set(trxids_of(journal, a.batch.batch_id).values()).isdisjoint(
        trxids_of(journal, b.batch.batch_id).values()
    )


def test_explicit_batch_id_mismatch_refused(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    plan_batch(
        journal,
        validation_of(ROWS),
        target="sandbox",
        options=PlanOptions(),
        batch_id="march",
        now=NOON,
    )
    with pytest.raises(PlanRefused) as caught:
        plan_batch(
            journal,
            validation_of(ROWS[:2]),
            target="sandbox",
            options=PlanOptions(),
            batch_id="march",
            now=NOON,
        )
    assert caught.value.code == "batch_mismatch"
    assert "new --batch-id" in caught.value.message


def test_changed_options_refused(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    plan_batch(
        journal, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    with pytest.raises(PlanRefused, match="allow_duplicates"):
        plan_batch(
            journal,
            validation_of(ROWS),
            target="sandbox",
            options=PlanOptions(allow_duplicates=True),
            now=NOON,
        )


def test_duplicates_held_unless_allowed(tmp_path: Path) -> None:
    rows = [row(2, "01711000001"), row(3, "01711000001", duplicate_of=2)]
    journal = Journal.open(tmp_path / "j.sqlite")
    held = plan_batch(
        journal, validation_of(rows), target="sandbox", options=PlanOptions(), now=NOON
    )
    states = [tx.state for tx in journal.transactions(held.batch.batch_id)]
    assert states == [State.PLANNED, State.DUPLICATE]
    other = Journal.open(tmp_path / "k.sqlite")
    allowed = plan_batch(
        other,
        validation_of(rows),
        target="sandbox",
        options=PlanOptions(allow_duplicates=True),
        now=NOON,
    )
    txs = other.transactions(allowed.batch.batch_id)
    assert [tx.state for tx in txs] == [State.PLANNED, State.PLANNED]
    assert txs[0].trxid != txs[1].trxid


def test_split_parts_get_own_trxids(tmp_path: Path) -> None:
    split = ValidRow(
        source_row=2,
        number="01711000001",
        operator="GP",
        type="prepaid",
        amount=2500,
        parts=(834, 833, 833),
    )
    journal = Journal.open(tmp_path / "j.sqlite")
    result = plan_batch(
        journal,
        validation_of([split]),
        target="sandbox",
        options=PlanOptions(),
        now=NOON,
    )
    txs = journal.transactions(result.batch.batch_id)
    assert [tx.amount for tx in txs] == [834, 833, 833]
    assert len({tx.trxid for tx in txs}) == 3


def test_newer_file_version_supersedes_unsent(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    old = plan_batch(
        journal, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    new = plan_batch(
        journal,
        validation_of(ROWS[:2]),
        target="sandbox",
        options=PlanOptions(),
        now=NOON,
    )
    old_states = {tx.state for tx in journal.transactions(old.batch.batch_id)}
    assert new.superseded == 3
    assert old_states == {State.SUPERSEDED}


def test_repeat_guard_counts_sent_rows(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    first = plan_batch(
        journal,
        validation_of(ROWS),
        target="sandbox",
        options=PlanOptions(),
        batch_id="one",
        now=NOON,
    )
    sent = journal.transactions(first.batch.batch_id)[0]
    journal.start_attempts([(sent.trxid, "h")])
    second = plan_batch(
        journal,
        validation_of(ROWS),
        target="sandbox",
        options=PlanOptions(),
        batch_id="two",
        now=NOON,
    )
    txs = journal.transactions(second.batch.batch_id)
    assert [tx.state for tx in txs] == [State.REPEAT, State.PLANNED, State.PLANNED]
    assert txs[0].repeat_of == sent.trxid


def test_repeat_window_expires_for_final_rows(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    first = plan_batch(
        journal,
        validation_of(ROWS),
        target="sandbox",
        options=PlanOptions(),
        batch_id="one",
        now=NOON,
    )
    tx = journal.transactions(first.batch.batch_id)[0]
    journal.start_attempts([(tx.trxid, "h")])
    journal.transition(tx.trxid, State.SUCCESS, cause="test")
    journal.update_fields(tx.trxid, first_sent_at="2026-12-01T00:00:00+00:00")
    later = journal.transactions(first.batch.batch_id)[0]
    assert find_repeat(journal, later, "sandbox", 12.0) is None


def test_preview_writes_nothing(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.sqlite")
    preview = preview_plan(
        journal, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    planned = plan_batch(
        journal, validation_of(ROWS), target="sandbox", options=PlanOptions(), now=NOON
    )
    assert planned.created
    assert [r["trxid"] for r in preview.transactions] == [
        tx.trxid for tx in journal.transactions(planned.batch.batch_id)
    ]
