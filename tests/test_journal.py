"""The journal: file mode, pragmas, legal transitions, attempts, the lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bulk_topup.errors import JournalBusy, JournalError
from bulk_topup.journal import IllegalTransition, Journal
from bulk_topup.lock import hold_journal_lock
from bulk_topup.models import FINAL_STATES, TRANSITIONS, State


def new_journal(tmp_path: Path, states: list[State] | None = None) -> Journal:
    journal = Journal.open(tmp_path / "journal.sqlite")
    rows = []
    for index, state in enumerate(states or [State.PLANNED]):
        rows.append(
            {
                "trxid": f"BKTEST{index:04d}",
                "seq": index + 1,
                "source_row": index + 2,
                "part": 1,
                "parts": 1,
                "generation": 1,
                "occurrence": 1,
                "row_key": f"0171100000{index}|GP|prepaid|50||1/1",
                "number": f"0171100000{index}",
                "operator": "GP",
                "type": "prepaid",
                "amount": 50,
                "state": state,
                "batch_id": "b1",
            }
        )
    journal.insert_batch(
        {
            "batch_id": "b1",
            "target": "sandbox",
            "kind": "recharge",
            "file": "b.csv",
            "file_name": "b.csv",
            "day": "20261204",
            "fingerprint": "f" * 64,
            "explicit_id": False,
            "options": {},
        },
        rows,
    )
    return journal


def test_journal_file_is_private(tmp_path: Path) -> None:
    new_journal(tmp_path).close()
    for name in ("journal.sqlite", "journal.sqlite-wal"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_journal_pragmas_protect_commits(tmp_path: Path) -> None:
    journal = new_journal(tmp_path)
    mode = journal.conn.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = journal.conn.execute("PRAGMA synchronous").fetchone()[0]
    busy = journal.conn.execute("PRAGMA busy_timeout").fetchone()[0]
    assert mode == "wal"
    assert synchronous == 2
    assert busy >= 5000


ALL_PAIRS = [(old, new) for old in State for new in State]


@pytest.mark.parametrize(
    ("old", "new"), ALL_PAIRS, ids=[f"{o.value}-{n.value}" for o, n in ALL_PAIRS]
)
def test_journal_allows_only_legal_transitions(
    tmp_path: Path, old: State, new: State
) -> None:
    journal = new_journal(tmp_path, [old])
    legal = new in TRANSITIONS.get(old, frozenset())
    if legal:
        journal.transition("BKTEST0000", new, cause="test")
        assert journal.get("BKTEST0000").state is new  # type: ignore[union-attr]
    else:
        with pytest.raises(IllegalTransition):
            journal.transition("BKTEST0000", new, cause="test")
        assert journal.get("BKTEST0000").state is old  # type: ignore[union-attr]


def test_final_states_have_no_way_out() -> None:
    for state in FINAL_STATES:
        assert state not in TRANSITIONS, state


def test_journal_records_every_transition(tmp_path: Path) -> None:
    journal = new_journal(tmp_path)
    journal.start_attempts([("BKTEST0000", "hash-a")])
    journal.transition("BKTEST0000", State.PROCESSING, cause="accepted")
    steps = [(e["old_state"], e["new_state"]) for e in journal.events("BKTEST0000")]
    assert steps == [
        (None, "planned"),
        ("planned", "sending"),
        ("sending", "processing"),
    ]


def test_attempt_with_other_body_refused(tmp_path: Path) -> None:
    journal = new_journal(tmp_path)
    journal.start_attempts([("BKTEST0000", "hash-a")])
    journal.transition("BKTEST0000", State.UNKNOWN, cause="timeout")
    with pytest.raises(JournalError, match="differs from its first attempt"):
        journal.start_attempts([("BKTEST0000", "hash-b")])


def test_attempts_count_and_keep_hash(tmp_path: Path) -> None:
    journal = new_journal(tmp_path)
    first = journal.start_attempts([("BKTEST0000", "hash-a")])
    second = journal.start_attempts([("BKTEST0000", "hash-a")])
    attempts = journal.attempts("BKTEST0000")
    assert first == {"BKTEST0000": 1}
    assert second == {"BKTEST0000": 2}
    assert [a["request_hash"] for a in attempts] == ["hash-a", "hash-a"]


def test_group_commit_marks_all_sending(tmp_path: Path) -> None:
    journal = new_journal(tmp_path, [State.PLANNED] * 3)
    journal.start_attempts([(f"BKTEST{i:04d}", f"h{i}") for i in range(3)])
    states = {tx.state for tx in journal.transactions("b1")}
    assert states == {State.SENDING}


def test_unusable_journal_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="not a usable SQLite database"):
        Journal.open(path)


def test_lock_refuses_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with hold_journal_lock(path):
        with pytest.raises(JournalBusy, match="in use by another process"):
            with hold_journal_lock(path):
                pass


def test_lock_of_killed_process_is_released(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from bulk_topup.lock import hold_journal_lock\n"
            "with hold_journal_lock(pathlib.Path(sys.argv[1])):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(JournalBusy, match=f"pid {holder.pid}"):
        with hold_journal_lock(path):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    with hold_journal_lock(path):
        holder_text = (tmp_path / "journal.sqlite.lock").read_text()
    assert f"pid {os.getpid()}" in holder_text
