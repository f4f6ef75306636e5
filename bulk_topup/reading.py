"""Reading batch files into text cells: CSV, TSV, TXT, XLSX, XLS and ODS.

Every cell comes back as text (``models.Cell``) with the kind of value that
the file stored, so no column is ever inferred as a number. The format is
sniffed from the content: a zip archive is a workbook, an OLE2 file is an
``.xls`` or an encrypted workbook, anything else is delimited text.

A file that cannot be used raises ``InputError`` with one of the codes
``file_not_found``, ``unsupported_format``, ``no_header``, ``missing_columns``,
``ambiguous_sheet``, ``file_too_large``, ``encrypted`` or ``unreadable``.
Every other failure of a parser is converted into ``unreadable`` here, so bad
input never surfaces as a traceback.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import columns
from .errors import InputError
from .models import Cell, SourceRecord, SourceTable
from .workbook import header_names, read_calamine, read_xlsx, too_large

MIB = 1024 * 1024
TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls", ".ods"})
SUPPORTED = ".csv, .tsv, .txt, .xlsx, .xls or .ods"
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
DELIMITERS = (",", ";", "\t")
# Sniffing the delimiter looks at this much of the text only.
SNIFF_CHARS = 1 * MIB
# A column stops caching its Cell objects after this many distinct values,
# so that a column of unique numbers does not hold a second copy of itself.
CELL_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class ReadLimits:
    """Limits that guard against hostile or runaway files, all configurable.

    The row and cell limits are Excel's own (1,048,576 rows, 32,767
    characters a cell), so they reject no file that Excel can save.
    ``max_columns`` is far above any batch layout. Sheet XML written by
    openpyxl or xlsxwriter compressed 5 to 12 times in 200,000-row tests, and
    a zip bomb compresses 150 to 1,000 times, which is where the ratio sits.
    """

    max_file_bytes: int = 256 * MIB
    max_rows: int = 1_048_576
    max_columns: int = 256
    max_cell_chars: int = 32_767
    max_zip_entries: int = 1_000
    max_uncompressed_bytes: int = 512 * MIB
    max_compression_ratio: int = 100


def read_batch(
    path: str | os.PathLike[str],
    *,
    sheet: str | None = None,
    limits: ReadLimits | None = None,
) -> SourceTable:
    """Read a batch file into text cells, finding its header row.

    Raises ``InputError`` for a file that cannot be used as a whole.
    """
    limits = limits or ReadLimits()
    file_path = Path(path)
    data = _read_bytes(file_path, limits)
    if data.startswith(ZIP_MAGIC):
        return read_xlsx_or_ods(file_path, data, sheet, limits)
    if data.startswith(OLE2_MAGIC):
        return _read_ole2(file_path, data, sheet, limits)
    suffix = file_path.suffix.lower()
    if suffix in SPREADSHEET_SUFFIXES:
        raise InputError(
            f"{file_path.name} is not a valid {suffix} workbook (its content is "
            "neither a zip archive nor an OLE2 file); save it again from the "
            "spreadsheet program",
            code="unreadable",
        )
    if suffix not in TEXT_SUFFIXES:
        raise _unsupported(file_path)
    return read_text(file_path, data, limits)


def read_xlsx_or_ods(
    path: Path, data: bytes, sheet: str | None, limits: ReadLimits
) -> SourceTable:
    """Read a zip-based workbook after checking the archive against the limits."""
    archive = open_archive(path, data, limits)
    with archive:
        names = set(archive.namelist())
        if "xl/workbook.xml" in names:
            return read_xlsx(path, archive, sheet, limits)
        if "content.xml" in names and _is_ods(archive):
            return read_calamine(path, data, "ods", sheet, limits)
        if "xl/workbook.bin" in names:
            raise InputError(
                f"{path.name} is an Excel binary workbook (.xlsb), which is not "
                "supported; save it as .xlsx or .csv",
                code="unsupported_format",
            )
    raise _unsupported(path, detail=" (it is a zip archive but not a workbook)")


def _read_ole2(
    path: Path, data: bytes, sheet: str | None, limits: ReadLimits
) -> SourceTable:
    # Office writes a password-protected .xlsx as an OLE2 container with an
    # EncryptedPackage stream, whose name is stored in UTF-16-LE.
    if "EncryptedPackage".encode("utf-16-le") in data:
        raise InputError(
            f"{path.name} is password-protected; remove the password in Excel "
            "(File > Info > Protect Workbook) or save the batch as .csv",
            code="encrypted",
        )
    return read_calamine(path, data, "xls", sheet, limits)


def _unsupported(path: Path, detail: str = "") -> InputError:
    return InputError(
        f"{path.name} is not a supported batch file{detail}; use {SUPPORTED}",
        code="unsupported_format",
    )


def _read_bytes(path: Path, limits: ReadLimits) -> bytes:
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise InputError(
                f"{path} is a directory; give the path of a batch file",
                code="unreadable",
            )
        if size > limits.max_file_bytes:
            raise too_large(path.name, f"{size:,} bytes", f"{limits.max_file_bytes:,}")
        with path.open("rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
    except FileNotFoundError:
        raise InputError(
            f"{path} not found; check the path and the current directory",
            code="file_not_found",
        ) from None
    except OSError as error:
        raise InputError(
            f"cannot read {path}: {error.strerror or error}; check its permissions",
            code="unreadable",
        ) from None
    if len(data) > limits.max_file_bytes:
        raise too_large(path.name, "more bytes", f"{limits.max_file_bytes:,}")
    if not data.strip():
        raise InputError(
            f"{path.name} is empty; a batch needs a header row naming at least "
            "the number and amount columns",
            code="no_header",
        )
    return data


# --- zip archives ------------------------------------------------------------


def open_archive(path: Path, data: bytes, limits: ReadLimits) -> zipfile.ZipFile:
    """Open a zip archive, refusing it unless every entry passes the limits.

    Each entry is checked by its declared size and ratio first, then
    decompressed in chunks with the same limits applied to the bytes actually
    produced, so a zip bomb is refused after reading at most the limit.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        ValueError,
        EOFError,
        OSError,
    ) as error:
        raise _bad_archive(path, error) from None
    try:
        _check_declared(path, infos, limits)
        _check_actual(path, archive, infos, limits)
    except BaseException:
        archive.close()
        raise
    return archive


def _check_declared(
    path: Path, infos: Sequence[zipfile.ZipInfo], limits: ReadLimits
) -> None:
    if len(infos) > limits.max_zip_entries:
        raise too_large(
            path.name, f"{len(infos):,} archive entries", f"{limits.max_zip_entries:,}"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_uncompressed_bytes:
        raise too_large(
            path.name,
            f"{total:,} bytes uncompressed",
            f"{limits.max_uncompressed_bytes:,}",
        )
    for info in infos:
        if info.flag_bits & 0x1:
            raise InputError(
                f"{path.name} is password-protected; remove the password or save "
                "the batch as .csv",
                code="encrypted",
            )
        if _ratio_exceeded(info.file_size, info.compress_size, limits):
            raise _bomb(path, info.filename)
        if info.compress_size > info.file_size + info.file_size // 100 + 1024:
            # Deflate never grows data by more than a few bytes a block, so
            # an entry holding more data than it declares is lying about it.
            raise _bomb(path, info.filename)


def _check_actual(
    path: Path,
    archive: zipfile.ZipFile,
    infos: Sequence[zipfile.ZipInfo],
    limits: ReadLimits,
) -> None:
    total = 0
    for info in infos:
        produced = 0
        try:
            with archive.open(info) as entry:
                while chunk := entry.read(MIB):
                    produced += len(chunk)
                    total += len(chunk)
                    if total > limits.max_uncompressed_bytes:
                        raise _bomb(path, info.filename)
                    if _ratio_exceeded(produced, info.compress_size, limits):
                        raise _bomb(path, info.filename)
        except RuntimeError as error:
            # zipfile raises RuntimeError for an encrypted entry.
            raise InputError(
                f"{path.name} is encrypted ({error}); save it without a password",
                code="encrypted",
            ) from None
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            NotImplementedError,
            ValueError,
        ) as error:
            raise _bad_archive(path, error) from None


def _ratio_exceeded(size: int, compressed: int, limits: ReadLimits) -> bool:
    # Tiny entries compress well for harmless reasons, so the ratio is judged
    # only once an entry has produced a mebibyte.
    if size <= MIB:
        return False
    return size > limits.max_compression_ratio * max(compressed, 1)


def _bomb(path: Path, entry: str) -> InputError:
    return InputError(
        f"{path.name} expands far beyond its size ({entry} exceeds the "
        "uncompressed size or compression ratio limit), which is how zip bombs "
        "look; save the batch again or as .csv",
        code="file_too_large",
    )


def _bad_archive(path: Path, error: BaseException) -> InputError:
    return InputError(
        f"{path.name} is a damaged zip archive ({error}); save the batch again",
        code="unreadable",
    )


def _is_ods(archive: zipfile.ZipFile) -> bool:
    try:
        mimetype = archive.read("mimetype")[:200]
    except KeyError:
        return True
    return b"spreadsheet" in mimetype


# --- delimited text ----------------------------------------------------------


def _c1_fallback(error: UnicodeError) -> tuple[str, int]:
    # Windows-1252 leaves five bytes undefined; browsers decode them as the C1
    # control characters of the same code, and so does this reader.
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return chr(error.object[error.start]), error.start + 1


codecs.register_error("bulk_topup_c1", _c1_fallback)


def decode_text(path: Path, data: bytes) -> tuple[str, str]:
    """Decode a text batch; return the text and the encoding's name.

    BOMs decide first (UTF-8, UTF-16, UTF-32), then UTF-16 without BOM by its
    NUL bytes, then strict UTF-8, then Windows-1252.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode_strict(path, data[len(bom) :], encoding), encoding
    if b"\x00" in data[:4096]:
        guessed = _guess_utf16(data[:4096])
        if guessed is None:
            raise InputError(
                f"{path.name} contains NUL bytes, so it is not a text batch; "
                f"use {SUPPORTED}",
                code="unreadable",
            )
        return _decode_strict(path, data, guessed), guessed
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="bulk_topup_c1"), "windows-1252"


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _guess_utf16(sample: bytes) -> str | None:
    pairs = len(sample) // 2
    if pairs == 0:
        return None
    odd = sum(1 for index in range(1, 2 * pairs, 2) if sample[index] == 0)
    even = sum(1 for index in range(0, 2 * pairs, 2) if sample[index] == 0)
    if odd > 0.4 * pairs and even < 0.1 * pairs:
        return "utf-16-le"
    if even > 0.4 * pairs and odd < 0.1 * pairs:
        return "utf-16-be"
    return None


def _decode_strict(path: Path, data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path.name} is not valid {encoding} (byte {error.start}); save it "
            "again as CSV UTF-8",
            code="unreadable",
        ) from None
    return text


def read_text(path: Path, data: bytes, limits: ReadLimits) -> SourceTable:
    """Read delimited text: detect encoding, delimiter and header row."""
    text, encoding = decode_text(path, data)
    if "\x00" in text:
        raise InputError(
            f"{path.name} contains NUL characters, so it is not a text batch; "
            f"use {SUPPORTED}",
            code="unreadable",
        )
    directive = _sep_directive(text)
    first_line = 2 if directive else 1
    delimiter, header_line = _choose_delimiter(path, text, directive, first_line)
    header, records = _parse_records(path, text, delimiter, header_line, limits)
    return SourceTable(
        path=str(path),
        format="csv",
        header=header,
        records=records,
        header_row=header_line,
        encoding=encoding,
        delimiter=delimiter,
        decimal_comma=delimiter == ";",
    )


def _sep_directive(text: str) -> str | None:
    # Excel writes and honours a first line "sep=;" that names the delimiter.
    first = text[:12].split("\n", 1)[0].rstrip("\r")
    if len(first) == 5 and first[:4].lower() == "sep=" and first[4] not in '"\r\n':
        return first[4]
    return None


def _choose_delimiter(
    path: Path, text: str, directive: str | None, first_line: int
) -> tuple[str, int]:
    candidates = (directive,) if directive else DELIMITERS
    if path.suffix.lower() == ".tsv" and not directive:
        candidates = ("\t", ",", ";")
    sample = text[:SNIFF_CHARS]
    best: tuple[int, int, str, int] | None = None
    partial: columns.HeaderMatch | None = None
    for delimiter in candidates:
        rows = _leading_records(sample, delimiter, first_line)
        position, match = columns.find_header(fields for _, fields in rows)
        if position is not None and match is not None:
            score = (1, len(match.columns), delimiter, rows[position][0])
            if best is None or score[:2] > best[:2]:
                best = score
        elif match is not None and (
            partial is None or len(match.columns) > len(partial.columns)
        ):
            partial = match
    if best is None:
        raise columns.header_error(path.name, partial)
    return best[2], best[3]


def _leading_records(
    sample: str, delimiter: str, first_line: int
) -> list[tuple[int, list[str]]]:
    """Return the first non-blank records of a sample with their line numbers."""
    found: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    previous = 0
    try:
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if start < first_line or not any(field.strip() for field in fields):
                continue
            found.append((start, fields))
            if len(found) >= columns.HEADER_SEARCH_ROWS:
                break
    except csv.Error:
        pass
    return found


def _parse_records(
    path: Path, text: str, delimiter: str, header_line: int, limits: ReadLimits
) -> tuple[tuple[str, ...], tuple[SourceRecord, ...]]:
    try:
        with paused_gc(freeze=False):
            rows = _records(path, text, delimiter, header_line, limits, True)
    except _MalformedQuote:
        # A quote followed by more text ("2"x) is kept as text, as Excel does.
        # Only the strict pass detects a quote that is never closed.
        rows = _records(path, text, delimiter, header_line, limits, False)
    header_fields = rows[0][1]
    builder = _CellBuilder()
    with paused_gc(freeze=len(rows) > FREEZE_MIN_RECORDS):
        records = tuple(
            SourceRecord(line, builder.cells(fields)) for line, fields in rows[1:]
        )
    return header_names(header_fields), records


@contextmanager
def paused_gc(freeze: bool = True) -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of objects.

    Each automatic collection would walk every object built so far again.
    With ``freeze``, the objects that exist at the end are moved out of the
    collector's sight (``gc.freeze``) so that later collections skip them
    too. They are still freed by reference counting because they form no
    cycles, but any cyclic garbage that exists then is kept until exit. On a
    million-row CSV this took reading and validating from 22 s to 11 s
    (scripts/bench_validate.py on a shared 2-core machine).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


# Below this many records, pausing the collector is not worth a freeze.
FREEZE_MIN_RECORDS = 100_000


class _MalformedQuote(Exception):
    pass


def _records(
    path: Path,
    text: str,
    delimiter: str,
    header_line: int,
    limits: ReadLimits,
    strict: bool,
) -> list[tuple[int, list[str]]]:
    """Parse the header and the records after it, each with its first line."""
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter, strict=strict
    )
    rows: list[tuple[int, list[str]]] = []
    previous = 0
    max_columns, max_cell = limits.max_columns, limits.max_cell_chars
    try:
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if start < header_line:
                continue
            if len(fields) > max_columns or max(map(len, fields), default=0) > max_cell:
                raise _record_error(path, fields, start, limits)
            rows.append((start, fields))
            if len(rows) > limits.max_rows + 1:
                raise too_large(path.name, "more rows", f"{limits.max_rows:,} rows")
    except csv.Error as error:
        raise _csv_error(path, error, previous + 1) from None
    return rows


def _csv_error(path: Path, error: csv.Error, line: int) -> Exception:
    message = str(error)
    if "expected after" in message:
        return _MalformedQuote()
    if "unexpected end of data" in message:
        return InputError(
            f"{path.name}: the quoted field that starts on line {line} is never "
            "closed; add the closing quote",
            code="unreadable",
        )
    if "field larger than field limit" in message:
        limit = f"{csv.field_size_limit():,} characters"
        return too_large(path.name, f"a cell on line {line}", limit)
    return InputError(
        f"{path.name}: line {line} cannot be read as CSV ({message})",
        code="unreadable",
    )


def _record_error(
    path: Path, fields: list[str], line: int, limits: ReadLimits
) -> InputError:
    if len(fields) > limits.max_columns:
        found = f"{len(fields)} fields on line {line}"
        return too_large(path.name, found, f"{limits.max_columns} fields")
    longest = max(map(len, fields))
    found = f"a cell of {longest:,} characters on line {line}"
    return too_large(path.name, found, f"{limits.max_cell_chars:,} characters")


class _CellBuilder:
    """Create text cells, sharing one object per repeated value of a column."""

    def __init__(self) -> None:
        self._caches: list[dict[str, Cell]] = []

    def cells(self, fields: Sequence[str]) -> tuple[Cell, ...]:
        caches = self._caches
        while len(caches) < len(fields):
            caches.append({})
        return tuple(
            [
                cache.get(text) or self._new(cache, text)
                for cache, text in zip(caches, fields, strict=False)
            ]
        )

    @staticmethod
    def _new(cache: dict[str, Cell], text: str) -> Cell:
        cell = Cell(text)
        if len(cache) < CELL_CACHE_LIMIT:
            cache[text] = cell
        return cell
