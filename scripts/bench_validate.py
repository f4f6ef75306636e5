"""Measure reading and validating a large CSV batch: time and peak memory.

Writes a batch of N rows to a temporary folder. A share of the rows is
written the messy way people do, so that the per-cell rules run too. The
batch is then read and validated in this process, and the script prints the
time of each stage and the peak resident memory (ru_maxrss) of the process.

    .venv/bin/python scripts/bench_validate.py --rows 1000000 --messy 0.01
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

from bulk_topup.reading import read_batch
from bulk_topup.validation import describe_validation, validate_table

OPERATORS = {"013": "GP", "017": "GP", "014": "BL", "019": "BL", "015": "TT"}
OPERATORS |= {"016": "AT", "018": "RB"}


def write_batch(path: Path, rows: int, messy: float, seed: int) -> None:
    """Write a batch; a share of rows has separators, names and currency marks."""
    generator = random.Random(seed)
    prefixes = sorted(OPERATORS)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("number,operator,type,amount,package_id,reference\n")
        for index in range(rows):
            prefix = generator.choice(prefixes)
            number = f"{prefix}{generator.randrange(10**8):08d}"
            amount = generator.randrange(20, 1000)
            if generator.random() < messy:
                line = f"+880 {number[1:4]}-{number[4:]},{OPERATORS[prefix].lower()},"
                line += f'Pre-paid,"Tk {amount:,}",,REF-{index}\n'
            else:
                line = f"{number},{OPERATORS[prefix]},prepaid,{amount},,REF-{index}\n"
            handle.write(line)


def main() -> None:
    """Generate, read, validate and print the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to write")
    parser.add_argument("--messy", type=float, default=0.01, help="share of messy rows")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "batch.csv"
        write_batch(path, arguments.rows, arguments.messy, arguments.seed)
        size = path.stat().st_size
        started = time.perf_counter()
        table = read_batch(path)
        read = time.perf_counter()
        validation = validate_table(table)
        validated = time.perf_counter()
        document = describe_validation(validation)
        described = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    megabytes = size / 2**20
    print(f"rows: {arguments.rows:,} ({megabytes:.1f} MiB), messy {arguments.messy}")
    print(f"read:     {read - started:6.2f} s")
    print(f"validate: {validated - read:6.2f} s")
    print(f"describe: {described - validated:6.2f} s")
    print(f"totals:   {document['totals']}")
    print(f"peak RSS: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
