"""The journal's lock: one sending process per journal at a time.

The lock is an ``flock`` on a file beside the journal. The kernel releases it
when its process dies, however it dies, so a lock left by a killed process never
blocks the next run. The file stores the holder's pid and command for the
message that a second process prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import JournalBusy


def lock_path(journal_path: Path) -> Path:
    """Return the lock file that belongs to a journal."""
    return journal_path.with_name(journal_path.name + ".lock")


@contextlib.contextmanager
def hold_journal_lock(journal_path: Path) -> Iterator[None]:
    """Hold the journal's lock for the block, or raise JournalBusy at once."""
    path = lock_path(journal_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip()
            raise JournalBusy(
                f"The journal {journal_path} is in use by another process "
                f"({holder or 'pid unknown'}). Wait for it to finish, "
                "or use another journal with --journal."
            ) from None
        os.ftruncate(descriptor, 0)
        command = " ".join(os.path.basename(arg) for arg in sys.argv[:2])
        os.pwrite(descriptor, f"pid {os.getpid()}: {command}".encode(), 0)
        yield
    finally:
        os.close(descriptor)
