"""Measure end-to-end sending: `run` against a sandbox process on loopback.

Writes a batch of N rows, starts `bulk-topup sandbox serve`, runs the tool as
a real process with a high --rate, and prints rows per second for the send
phase (from the journal's first and last attempt times) and for the whole run.

    python scripts/bench_send.py --rows 5000 --concurrency 32 --latency-ms 0
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


def write_batch(path: Path, rows: int) -> None:
    lines = ["number,operator,type,amount"]
    lines += [f"0171{index:07d},GP,prepaid,{10 + index % 90}" for index in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_sandbox(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulk_topup.sandbox",
            "--port",
            "0",
            "--processing-seconds",
            "0.5",
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip().removeprefix("listening on ")


def send_seconds(journal: Path) -> float:
    connection = sqlite3.connect(journal)
    first, last = connection.execute(
        "SELECT min(started_at), max(finished_at) FROM attempts"
    ).fetchone()
    connection.close()
    return (
        datetime.fromisoformat(last) - datetime.fromisoformat(first)
    ).total_seconds()


def main() -> None:
    """Run one measurement and print it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-send-"))
    batch, journal = folder / "batch.csv", folder / "journal.sqlite"
    write_batch(batch, args.rows)
    sandbox, url = start_sandbox(args.latency_ms)
    environment = {
        **os.environ,
        "STU_KEY": "bench",
        "STU_SECRET": "bench",
        "BULK_TOPUP_SETTLE_INTERVAL": "0.5",
    }
    started = time.monotonic()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bulk_topup",
                "run",
                str(batch),
                "--yes",
                "-q",
                "--base-url",
                url,
                "--journal",
                str(journal),
                "--rate",
                str(args.rate),
                "--concurrency",
                str(args.concurrency),
                "--report",
                str(folder / "r.csv"),
            ],
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    total = time.monotonic() - started
    sending = send_seconds(journal)
    print(
        json.dumps(
            {
                "rows": args.rows,
                "concurrency": args.concurrency,
                "rate": args.rate,
                "latency_ms": args.latency_ms,
                "exit_code": result.returncode,
                "send_seconds": round(sending, 2),
                "send_rows_per_second": round(args.rows / sending, 1),
                "whole_run_seconds": round(total, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
