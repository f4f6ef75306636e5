"""Fuzzing the readers: random and mutated CSV, XLSX and ODS bytes.

Whatever the bytes, reading and validating raises nothing but InputError.
The suite runs a bounded number of examples; scripts/fuzz_readers.py runs
the same properties for as long as it is asked to.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_topup.errors import InputError
from bulk_topup.reading import ReadLimits, read_batch
from bulk_topup.validation import describe_validation, format_problems, validate_table

CASES = Path(__file__).parent / "data" / "cases"
SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx", ".xls", ".ods", ".bin")
# Small limits keep each example fast; hitting them is a valid outcome.
LIMITS = ReadLimits(
    max_file_bytes=1024 * 1024,
    max_rows=5000,
    max_uncompressed_bytes=16 * 1024 * 1024,
)
EXAMPLES = 300
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def seeds(pattern: str) -> list[bytes]:
    """Return the case inputs matching a glob, as the mutators' starting points."""
    return [path.read_bytes() for path in sorted(CASES.glob(f"*/{pattern}"))]


CSV_SEEDS = seeds("input*.csv") + seeds("input*.txt")
XLSX_SEEDS = seeds("input*.xlsx")
NOISE = [b'"', b",", b";", b"\t", b"\n", b"\r", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf"]
NOISE += [b"sep=;\n", b"1.71E+09", "\u200b৫".encode(), b"<", b"&", b"=SUM(A1)"]


def read_and_validate(data: bytes, suffix: str) -> None:
    """Run the whole input stage on some bytes; only InputError may escape."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"batch{suffix}"
        path.write_bytes(data)
        try:
            table = read_batch(path, limits=LIMITS)
            validation = validate_table(table)
        except InputError as error:
            assert error.code
            assert "\n" not in error.message
            return
        json.dumps(describe_validation(validation))
        format_problems(validation)


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    """Draw a seed and apply a few byte-level edits to it."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 4))
        if action == 0 and data:
            del data[position : position + draw(st.integers(1, 64))]
        elif action == 1:
            data[position:position] = draw(st.sampled_from(NOISE))
        elif action == 2 and data:
            data[min(position, len(data) - 1)] = draw(st.integers(0, 255))
        elif action == 3:
            data[position:position] = draw(st.binary(max_size=16))
        else:
            start = draw(st.integers(0, len(data)))
            data[position:position] = data[start : start + 200]
    return bytes(data)


@st.composite
def mutated_workbooks(draw: st.DrawFn) -> bytes:
    """Draw an xlsx seed, mutate one of its XML parts and zip it again."""
    with zipfile.ZipFile(io.BytesIO(draw(st.sampled_from(XLSX_SEEDS)))) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    target = draw(st.sampled_from(sorted(parts)))
    parts[target] = draw(mutated([parts[target]]))
    if draw(st.booleans()):
        parts.pop(draw(st.sampled_from(sorted(parts))))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@FUZZ_SETTINGS
@given(st.binary(max_size=2048), st.sampled_from(SUFFIXES))
def test_random_bytes_raise_only_input_error(data: bytes, suffix: str) -> None:
    read_and_validate(data, suffix)


@FUZZ_SETTINGS
@given(mutated(CSV_SEEDS), st.sampled_from((".csv", ".txt", ".tsv")))
def test_mutated_csv_raises_only_input_error(data: bytes, suffix: str) -> None:
    read_and_validate(data, suffix)


@FUZZ_SETTINGS
@given(mutated(XLSX_SEEDS))
def test_mutated_xlsx_raises_only_input_error(data: bytes) -> None:
    read_and_validate(data, ".xlsx")


@FUZZ_SETTINGS
@given(mutated_workbooks())
def test_mutated_parts_raise_only_input_error(data: bytes) -> None:
    read_and_validate(data, ".xlsx")


@FUZZ_SETTINGS
@given(st.lists(st.lists(st.text(max_size=12), max_size=7), max_size=12))
def test_random_cells_raise_only_input_error(rows: list[list[str]]) -> None:
    lines = ["number,operator,type,amount,package_id,reference"]
    lines += [",".join(cells) for cells in rows]
    read_and_validate("\n".join(lines).encode("utf-8", "surrogatepass"), ".csv")
