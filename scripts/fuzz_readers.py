"""Fuzz the batch readers for a while: only InputError may ever escape.

Runs the properties of tests/test_fuzz_readers.py (random bytes, mutated CSV,
mutated xlsx bytes and parts, random cells) in rounds until the time is up,
and prints the falsifying example of any failure.

    .venv/bin/python scripts/fuzz_readers.py --minutes 5
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_fuzz_readers as fuzz  # noqa: E402

ROUND_EXAMPLES = 500


def properties() -> dict[str, Callable[[], None]]:
    """Return each fuzz property bound to a large, unseeded example budget."""
    budget = settings(
        max_examples=ROUND_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    suffixes = st.sampled_from(fuzz.SUFFIXES)
    text_suffixes = st.sampled_from((".csv", ".txt", ".tsv"))
    return {
        "random bytes": budget(
            given(st.binary(max_size=4096), suffixes)(fuzz.read_and_validate)
        ),
        "mutated csv": budget(
            given(fuzz.mutated(fuzz.CSV_SEEDS), text_suffixes)(fuzz.read_and_validate)
        ),
        "mutated xlsx bytes": budget(
            given(fuzz.mutated(fuzz.XLSX_SEEDS), st.just(".xlsx"))(
                fuzz.read_and_validate
            )
        ),
        "mutated xlsx parts": budget(
            given(fuzz.mutated_workbooks(), st.just(".xlsx"))(fuzz.read_and_validate)
        ),
    }


def main() -> int:
    """Run the fuzz rounds and return 1 if any property failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="time to run")
    arguments = parser.parse_args()
    deadline = time.monotonic() + arguments.minutes * 60
    runs = dict.fromkeys(properties(), 0)
    failures = 0
    while time.monotonic() < deadline:
        for name, run in properties().items():
            try:
                run()
            except Exception:  # noqa: BLE001
                failures += 1
                print(f"FAILED: {name}\n{traceback.format_exc()}", flush=True)
            runs[name] += ROUND_EXAMPLES
            if time.monotonic() >= deadline:
                break
    for name, count in runs.items():
        print(f"{name}: {count} examples")
    print(f"failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
