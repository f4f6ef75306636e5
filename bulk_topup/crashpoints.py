"""Named crash points for tests that kill a real process at a chosen step.

Setting ``BULK_TOPUP_CRASH_AT=NAME`` (or ``NAME:N`` for the N-th time the
step is reached) makes the process SIGKILL itself there, exactly as a power
cut or ``kill -9`` would. Unset, every call is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT_VARIABLE = "BULK_TOPUP_CRASH_AT"
POINTS = (
    "after_planning",
    "after_sending_committed",
    "after_request_written",
    "after_answer_before_journal",
    "while_settling",
    "while_writing_report",
)
_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    value = os.environ.get(ENVIRONMENT_VARIABLE)
    if not value:
        return None
    name, _, count = value.partition(":")
    return name, int(count) if count.isdigit() else 1


def is_armed(name: str) -> bool:
    """Return whether a crash is set up at the named point."""
    target = _target()
    return target is not None and target[0] == name


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if the crash switch names this point."""
    target = _target()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
