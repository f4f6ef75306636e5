"""Run the benchmarks that docs/benchmarks.md records, one after another.

    make bench                      # the default sizes below
    python scripts/bench.py --quick # smaller sizes, for a smoke run

Each benchmark is a script of its own in this folder; this one runs them as
subprocesses, so that each has its own process and its own peak memory, and
prints their output with the command line that produced it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks(quick: bool) -> list[list[str]]:
    """Return the command lines of the benchmarks to run."""
    rows = "100000" if quick else "1000000"
    sends = "1000" if quick else "5000"
    return [
        ["bench_validate.py", "--rows", rows, "--messy", "0.01"],
        ["bench_send.py", "--rows", sends, "--concurrency", "32"],
        ["bench_send.py", "--rows", sends, "--concurrency", "64", "--latency-ms", "50"],
        [
            "kill_soak.py",
            "--rows",
            "2000" if quick else "10000",
            "--kills",
            "10" if quick else "50",
        ],
    ]


def main() -> None:
    """Run every benchmark and print what each printed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    for script, *options in benchmarks(args.quick):
        command = [sys.executable, str(HERE / script), *options]
        print(f"\n$ python scripts/{script} {' '.join(options)}", flush=True)
        subprocess.run(command, check=False)


if __name__ == "__main__":
    main()
