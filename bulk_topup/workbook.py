"""Reading spreadsheets (xlsx, xls, ods) into rows of typed text cells.

xlsx is parsed here with a streaming XML parser, because only the sheet XML
distinguishes a date-formatted number, a formula error and a formula without
a cached value, and it contains each number exactly as stored. xls and ods go through
calamine (fastexcel). Either way the header is searched among a sheet's first
non-blank rows, and row numbers are Excel's own.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING
from xml.parsers import expat

from . import columns
from .errors import InputError
from .models import Cell, CellKind, SourceRecord, SourceTable

if TYPE_CHECKING:
    from .reading import ReadLimits


def too_large(file_name: str, found: str, limit: str) -> InputError:
    """Build the error for a file over one of the read limits."""
    return InputError(
        f"{file_name} is too large ({found}, the limit is {limit}); split the "
        "batch into smaller files",
        code="file_too_large",
    )


def header_names(cells: Sequence[str]) -> tuple[str, ...]:
    """Return the header's names: trimmed, unnamed ones numbered, all unique.

    Trailing empty header cells are dropped, so the header is as wide as its
    last named column.
    """
    texts = [cell.strip() for cell in cells]
    while texts and not texts[-1]:
        texts.pop()
    names: list[str] = []
    seen: set[str] = set()
    for position, text in enumerate(texts, 1):
        name = text or f"column_{position}"
        unique, suffix = name, 2
        while unique.casefold() in seen:
            unique, suffix = f"{name} ({suffix})", suffix + 1
        seen.add(unique.casefold())
        names.append(unique)
    return tuple(names)


def number_text(stored: str) -> str | None:
    """Return a stored number in its shortest exact plain form, or None.

    ``1711000171``, ``1.711000171E9`` and ``1711000171.0`` all give
    ``1711000171``; the digits come from the stored text, never from a float.
    """
    try:
        value = Decimal(stored.strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite():
        return None
    if value.is_zero():
        return "0"
    # An absurd exponent would expand to a string of millions of zeros.
    if abs(value.adjusted()) > 60:
        return stored.strip()
    return format(value.normalize(), "f")


EMPTY_CELL = Cell("", CellKind.EMPTY)
GridRow = tuple[int, list[Cell]]


def is_blank(cells: Sequence[Cell]) -> bool:
    """Return whether every cell of a row is empty or whitespace."""
    return all(not cell.text.strip() for cell in cells)


@dataclass
class _SheetScan:
    """The first rows of one sheet and the header found among them."""

    name: str
    leading: list[GridRow]
    position: int | None
    match: columns.HeaderMatch | None

    @property
    def has_header(self) -> bool:
        return self.position is not None

    @property
    def has_rows(self) -> bool:
        return self.position is not None and self.position + 1 < len(self.leading)


def scan_sheet(name: str, rows: Iterator[GridRow]) -> _SheetScan:
    """Read a sheet's first non-blank rows and look for the header among them."""
    leading: list[GridRow] = []
    for row in rows:
        if is_blank(row[1]):
            continue
        leading.append(row)
        if len(leading) >= columns.HEADER_SEARCH_ROWS:
            break
    position, match = columns.find_header(
        [[cell.text for cell in cells] for _, cells in leading]
    )
    return _SheetScan(name, leading, position, match)


def choose_sheet(path: Path, scans: Sequence[_SheetScan]) -> _SheetScan:
    """Pick the one sheet with a header; raise when there is none or several.

    A sheet with a header but no rows (a template) gives way to one with rows.
    """
    found = [scan for scan in scans if scan.has_header]
    with_rows = [scan for scan in found if scan.has_rows]
    if len(with_rows) == 1 or (len(found) == 1 and not with_rows):
        return with_rows[0] if with_rows else found[0]
    if len(found) > 1:
        names = ", ".join(f"`{scan.name}`" for scan in with_rows or found)
        raise InputError(
            f"{path.name} has several sheets that look like a batch ({names}); "
            "choose one with --sheet NAME",
            code="ambiguous_sheet",
        )
    partials = [scan.match for scan in scans if scan.match is not None]
    best = max(partials, key=lambda match: len(match.columns), default=None)
    raise columns.header_error(path.name, best)


def grid_table(
    path: Path,
    fmt: str,
    scan: _SheetScan,
    rest: Iterator[GridRow],
    limits: ReadLimits,
) -> SourceTable:
    """Build the table of a sheet from its scanned header and remaining rows."""
    assert scan.position is not None
    header_number, header_cells = scan.leading[scan.position]
    after_header = scan.leading[scan.position + 1 :]
    records = _grid_records(path, header_number, [after_header, rest], limits)
    return SourceTable(
        path=str(path),
        format=fmt,
        header=header_names([cell.text for cell in header_cells]),
        records=records,
        header_row=header_number,
        sheet=scan.name,
    )


def _grid_records(
    path: Path,
    header_number: int,
    sources: Sequence[Iterable[GridRow]],
    limits: ReadLimits,
) -> tuple[SourceRecord, ...]:
    # Rows missing between data rows become blank records, so every row
    # number is accounted for; blank rows after the last data row are dropped.
    records: list[SourceRecord] = []
    pending: list[SourceRecord] = []
    expected = header_number + 1
    for source in sources:
        for number, cells in source:
            number = max(number, expected)
            if number - header_number > limits.max_rows:
                raise too_large(path.name, "more rows", f"{limits.max_rows:,} rows")
            pending.extend(SourceRecord(gap, ()) for gap in range(expected, number))
            trimmed = _trim(cells)
            if trimmed:
                records.extend(pending)
                pending.clear()
                records.append(SourceRecord(number, trimmed))
            else:
                pending.append(SourceRecord(number, ()))
            expected = number + 1
    return tuple(records)


def _trim(cells: list[Cell]) -> tuple[Cell, ...]:
    end = len(cells)
    while end and not cells[end - 1].text.strip():
        end -= 1
    return tuple(cells[:end])


# --- xlsx --------------------------------------------------------------------

# Built-in number formats that Excel displays as dates or times.
BUILTIN_DATE_FORMATS = frozenset(
    [*range(14, 23), *range(27, 37), *range(45, 48), *range(50, 59), *range(71, 82)]
)
XLSX_CHUNK = 256 * 1024


class _RefusedXml(Exception):
    pass


def _refuse_doctype(*_: object) -> None:
    # Spreadsheet parts never contain a DTD, so rejecting one rules out
    # entity expansion attacks before expat reads any entity.
    raise _RefusedXml("a DOCTYPE declaration")


def _new_parser() -> expat.XMLParserType:
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return parser


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def _feed(archive: zipfile.ZipFile, name: str, parser: expat.XMLParserType) -> None:
    with archive.open(name) as entry:
        while chunk := entry.read(XLSX_CHUNK):
            parser.Parse(chunk, False)
    parser.Parse(b"", True)


@dataclass(frozen=True)
class _Workbook:
    """The parts of an xlsx package that the sheet parser needs."""

    sheets: tuple[tuple[str, str, bool], ...]
    strings: tuple[str, ...]
    date_styles: frozenset[int]
    date1904: bool


def read_xlsx(
    path: Path, archive: zipfile.ZipFile, sheet: str | None, limits: ReadLimits
) -> SourceTable:
    """Read an xlsx workbook with a streaming XML parser.

    Parsing the sheet XML directly gives each cell's exact stored value, its
    type, its date style, and whether a formula has no cached value.
    """
    try:
        book = _load_workbook(archive)
        scans = [
            scan_sheet(name, _xlsx_rows(path.name, archive, part, book, limits))
            for name, part, _ in _sheets_to_scan(path, book, sheet)
        ]
        chosen = choose_sheet(path, scans)
        part = next(part for name, part, _ in book.sheets if name == chosen.name)
        rows = _xlsx_rows(path.name, archive, part, book, limits)
        skipped = chosen.leading[-1][0] if chosen.leading else 0
        rest = (row for row in rows if row[0] > skipped)
        return grid_table(path, "xlsx", chosen, rest, limits)
    except InputError:
        raise
    except (
        _RefusedXml,
        expat.ExpatError,
        LookupError,
        ValueError,
        OverflowError,
        RecursionError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    ) as error:
        raise InputError(
            f"{path.name} is not a readable xlsx workbook ({type(error).__name__}: "
            f"{error}); open it in Excel and save it again",
            code="unreadable",
        ) from None


def _sheets_to_scan(
    path: Path, book: _Workbook, sheet: str | None
) -> list[tuple[str, str, bool]]:
    if sheet is None:
        visible = [entry for entry in book.sheets if entry[2]]
        return visible or list(book.sheets)
    for entry in book.sheets:
        if entry[0] == sheet:
            return [entry]
    for entry in book.sheets:
        if entry[0].casefold() == sheet.casefold():
            return [entry]
    names = ", ".join(f"`{name}`" for name, _, _ in book.sheets)
    raise InputError(
        f"{path.name} has no sheet named `{sheet}`; its sheets are {names}",
        code="no_header",
    )


def _load_workbook(archive: zipfile.ZipFile) -> _Workbook:
    sheets, date1904 = _workbook_sheets(archive)
    names = set(archive.namelist())
    strings: tuple[str, ...] = ()
    if "xl/sharedStrings.xml" in names:
        strings = _shared_strings(archive)
    date_styles: frozenset[int] = frozenset()
    if "xl/styles.xml" in names:
        date_styles = _date_styles(archive)
    return _Workbook(sheets, strings, date_styles, date1904)


def _workbook_sheets(
    archive: zipfile.ZipFile,
) -> tuple[tuple[tuple[str, str, bool], ...], bool]:
    targets: dict[str, str] = {}
    entries: list[tuple[str, str, bool]] = []
    flags = {"date1904": False}

    def on_rel(name: str, attrs: dict[str, str]) -> None:
        if _local(name) == "Relationship":
            targets[attrs.get("Id", "")] = attrs.get("Target", "")

    def on_book(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "sheet":
            rel = next((v for k, v in attrs.items() if _local(k) == "id"), "")
            visible = attrs.get("state", "visible") == "visible"
            entries.append((attrs.get("name", ""), rel, visible))
        elif local == "workbookPr":
            flags["date1904"] = attrs.get("date1904", "0").lower() in ("1", "true")

    rels = "xl/_rels/workbook.xml.rels"
    if rels in archive.namelist():
        parser = _new_parser()
        parser.StartElementHandler = on_rel
        _feed(archive, rels, parser)
    parser = _new_parser()
    parser.StartElementHandler = on_book
    _feed(archive, "xl/workbook.xml", parser)
    sheets = tuple(
        (name, _sheet_part(targets.get(rel, ""), index), visible)
        for index, (name, rel, visible) in enumerate(entries, 1)
    )
    if not sheets:
        raise ValueError("the workbook lists no sheets")
    return sheets, flags["date1904"]


def _sheet_part(target: str, index: int) -> str:
    if not target:
        return f"xl/worksheets/sheet{index}.xml"
    if target.startswith("/"):
        return target.lstrip("/")
    parts: list[str] = []
    for piece in f"xl/{target}".split("/"):
        if piece == "..":
            if parts:
                parts.pop()
        elif piece and piece != ".":
            parts.append(piece)
    return "/".join(parts)


def _shared_strings(archive: zipfile.ZipFile) -> tuple[str, ...]:
    strings: list[str] = []
    state: dict[str, list[str] | None] = {"item": None, "text": None}
    depth = {"phonetic": 0}

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "si":
            state["item"] = []
        elif local == "rPh":
            depth["phonetic"] += 1
        elif local == "t" and state["item"] is not None and not depth["phonetic"]:
            state["text"] = state["item"]

    def end(name: str) -> None:
        local = _local(name)
        if local == "si" and state["item"] is not None:
            strings.append("".join(state["item"]))
            state["item"] = None
        elif local == "rPh":
            depth["phonetic"] -= 1
        elif local == "t":
            state["text"] = None

    def data(text: str) -> None:
        target = state["text"]
        if target is not None:
            target.append(text)

    parser = _new_parser()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    _feed(archive, "xl/sharedStrings.xml", parser)
    return tuple(strings)


def _date_styles(archive: zipfile.ZipFile) -> frozenset[int]:
    custom: dict[int, str] = {}
    formats: list[int] = []
    inside = {"cellXfs": False}

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "numFmt":
            custom[int(attrs.get("numFmtId", "0"))] = attrs.get("formatCode", "")
        elif local == "cellXfs":
            inside["cellXfs"] = True
        elif local == "xf" and inside["cellXfs"]:
            formats.append(int(attrs.get("numFmtId", "0")))

    def end(name: str) -> None:
        if _local(name) == "cellXfs":
            inside["cellXfs"] = False

    parser = _new_parser()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    _feed(archive, "xl/styles.xml", parser)
    return frozenset(
        index
        for index, format_id in enumerate(formats)
        if _is_date_format(format_id, custom.get(format_id))
    )


def _is_date_format(format_id: int, code: str | None) -> bool:
    if code is None:
        return format_id in BUILTIN_DATE_FORMATS
    # Quoted literals, escaped characters, [colour] or [$-locale] tags and
    # padding directives never make a format a date, so they are removed first.
    plain = _strip_format_literals(code.split(";")[0])
    return any(char in "dmyhsDMYHS" for char in plain)


def _strip_format_literals(code: str) -> str:
    kept: list[str] = []
    index = 0
    while index < len(code):
        char = code[index]
        if char == '"':
            end = code.find('"', index + 1)
            index = len(code) if end < 0 else end + 1
        elif char in "\\_*":
            index += 2
        elif char == "[":
            end = code.find("]", index + 1)
            index = len(code) if end < 0 else end + 1
        else:
            kept.append(char)
            index += 1
    return "".join(kept)


def _xlsx_rows(
    file_name: str,
    archive: zipfile.ZipFile,
    part: str,
    book: _Workbook,
    limits: ReadLimits,
) -> Iterator[GridRow]:
    handler = _SheetHandler(file_name, book, limits)
    parser = _new_parser()
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    parser.CharacterDataHandler = handler.data
    with archive.open(part) as entry:
        while chunk := entry.read(XLSX_CHUNK):
            parser.Parse(chunk, False)
            yield from handler.drain()
    parser.Parse(b"", True)
    yield from handler.drain()


class _SheetHandler:
    """Expat callbacks that turn ``<row>`` and ``<c>`` elements into cells."""

    def __init__(self, file_name: str, book: _Workbook, limits: ReadLimits) -> None:
        self.file_name = file_name
        self.book = book
        self.limits = limits
        self.done: list[GridRow] = []
        self.row_number = 0
        self.cells: list[Cell] = []
        self.column = -1
        self.target: list[str] | None = None
        self.phonetic = 0
        self._new_cell({})

    def _new_cell(self, attrs: dict[str, str]) -> None:
        self.ref = attrs.get("r", "")
        self.type = attrs.get("t", "n")
        self.style = attrs.get("s", "0")
        self.value: list[str] | None = None
        self.formula: list[str] | None = None
        self.inline: list[str] | None = None

    def drain(self) -> list[GridRow]:
        done, self.done = self.done, []
        return done

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "c":
            self._new_cell(attrs)
        elif local == "v":
            self.value = self.target = []
        elif local == "f":
            self.formula = self.target = []
        elif local == "is":
            self.inline = []
        elif local == "rPh":
            self.phonetic += 1
        elif local == "t" and self.inline is not None and not self.phonetic:
            self.target = self.inline
        elif local == "row":
            self._start_row(attrs)

    def _start_row(self, attrs: dict[str, str]) -> None:
        number = int(attrs["r"]) if "r" in attrs else self.row_number + 1
        if number < 1:
            raise ValueError(f"row number {number}")
        self.row_number = number
        self.cells = []
        self.column = -1

    def end(self, name: str) -> None:
        local = _local(name)
        if local in ("v", "f", "t"):
            self.target = None
        elif local == "rPh":
            self.phonetic -= 1
        elif local == "c":
            self._end_cell()
        elif local == "row":
            self.done.append((self.row_number, self.cells))
            self.cells = []

    def data(self, text: str) -> None:
        if self.target is not None:
            self.target.append(text)

    def _end_cell(self) -> None:
        column = _column_index(self.ref, self.column + 1)
        self.column = column
        cell = self._cell()
        if cell.kind is CellKind.EMPTY:
            return
        if column >= self.limits.max_columns:
            raise too_large(
                self.file_name,
                f"a cell in column {column + 1}",
                f"{self.limits.max_columns} columns",
            )
        if len(cell.text) > self.limits.max_cell_chars:
            raise too_large(
                self.file_name,
                f"a cell of {len(cell.text):,} characters in row {self.row_number}",
                f"{self.limits.max_cell_chars:,} characters",
            )
        if column >= len(self.cells):
            self.cells.extend([EMPTY_CELL] * (column + 1 - len(self.cells)))
        self.cells[column] = cell

    def _cell(self) -> Cell:
        value = None if self.value is None else "".join(self.value)
        kind = self.type
        if kind == "inlineStr":
            return Cell("".join(self.inline or ()))
        if kind == "s":
            return Cell(self.book.strings[int(value or "")])
        if value is None or (value == "" and kind not in ("str", "s")):
            if self.formula is not None:
                return Cell("=" + "".join(self.formula), CellKind.FORMULA_WITHOUT_VALUE)
            return EMPTY_CELL
        if kind == "str":
            return Cell(value)
        if kind == "b":
            return Cell("TRUE" if value.strip() == "1" else "FALSE", CellKind.BOOLEAN)
        if kind == "e":
            return Cell(value, CellKind.ERROR)
        if kind == "d":
            return Cell(value, CellKind.DATE)
        return self._number_cell(value)

    def _number_cell(self, value: str) -> Cell:
        text = number_text(value)
        if text is None:
            return Cell(value)
        if int(self.style or "0") in self.book.date_styles:
            return Cell(serial_to_iso(Decimal(text), self.book.date1904), CellKind.DATE)
        return Cell(text, CellKind.NUMBER)


def _column_index(ref: str, default: int) -> int:
    letters = ""
    for char in ref:
        if not char.isalpha():
            break
        letters += char
    if not letters or len(letters) > 3:
        return default
    index = 0
    for char in letters.upper():
        index = index * 26 + (ord(char) - ord("A") + 1)
    return index - 1


def serial_to_iso(serial: Decimal, date1904: bool) -> str:
    """Return an Excel date serial as ISO 8601 text, or the number if absurd."""
    if not 0 <= serial < 2_958_466:
        return format(serial, "f")
    if date1904:
        base = datetime(1904, 1, 1)
    elif serial < 60:
        # Excel counts a 29 February 1900 that never was; before it, the
        # serial is one day ahead of the calendar.
        base = datetime(1899, 12, 31)
    else:
        base = datetime(1899, 12, 30)
    moment = base + timedelta(days=float(serial))
    if moment.time() == datetime.min.time():
        return moment.date().isoformat()
    return moment.isoformat(sep=" ", timespec="seconds")


# --- xls and ods through calamine ---------------------------------------------


def read_calamine(
    path: Path, data: bytes, fmt: str, sheet: str | None, limits: ReadLimits
) -> SourceTable:
    """Read an xls or ods workbook with calamine (fastexcel)."""
    try:
        return _read_calamine(path, data, fmt, sheet, limits)
    except InputError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001
        # fastexcel raises its own errors and, for some damaged files, a
        # Rust panic that derives from BaseException.
        return _calamine_failure(path, fmt, error)


def _calamine_failure(path: Path, fmt: str, error: BaseException) -> SourceTable:
    detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    if "password" in detail.lower() or "encrypt" in detail.lower():
        raise InputError(
            f"{path.name} is password-protected; remove the password or save the "
            "batch as .csv",
            code="encrypted",
        )
    raise InputError(
        f"{path.name} is not a readable {fmt} workbook ({detail}); open it in "
        "the spreadsheet program and save it again",
        code="unreadable",
    )


def _read_calamine(
    path: Path, data: bytes, fmt: str, sheet: str | None, limits: ReadLimits
) -> SourceTable:
    import fastexcel

    reader = fastexcel.read_excel(data)
    names = list(reader.sheet_names)
    wanted = names if sheet is None else [_calamine_sheet(path, names, sheet)]
    grids = {name: _calamine_grid(path, reader, name, limits) for name in wanted}
    scans = [scan_sheet(name, iter(grids[name])) for name in wanted]
    chosen = choose_sheet(path, scans)
    skipped = chosen.leading[-1][0] if chosen.leading else 0
    rest = (row for row in grids[chosen.name] if row[0] > skipped)
    return grid_table(path, fmt, chosen, rest, limits)


def _calamine_sheet(path: Path, names: Sequence[str], sheet: str) -> str:
    for name in names:
        if name == sheet or name.casefold() == sheet.casefold():
            return name
    listed = ", ".join(f"`{name}`" for name in names)
    raise InputError(
        f"{path.name} has no sheet named `{sheet}`; its sheets are {listed}",
        code="no_header",
    )


def _calamine_grid(
    path: Path, reader: object, name: str, limits: ReadLimits
) -> list[GridRow]:
    """Load one sheet three ways and derive each cell's kind from the results.

    calamine returns every cell as text, as a float (numbers, booleans and
    numeric-looking text) and as a datetime or date (dates and numbers). A
    cell that is a datetime or date but not a float is a date. A float whose
    text is its plain number is a number.
    NOTE: error cells and formulas without a cached value read as empty here,
    so formula_error is reported only for xlsx.
    """
    loads = {}
    for dtype in ("string", "float", "datetime", "date"):
        sheet = reader.load_sheet(  # type: ignore[attr-defined]
            name, header_row=None, skip_rows=0, dtypes=dtype
        )
        if sheet.total_height > limits.max_rows + columns.HEADER_SEARCH_ROWS:
            raise too_large(
                path.name, f"{sheet.total_height:,} rows", f"{limits.max_rows:,}"
            )
        if sheet.width > limits.max_columns:
            raise too_large(
                path.name, f"{sheet.width} columns", f"{limits.max_columns}"
            )
        loads[dtype] = sheet.to_polars().rows()
    grid: list[GridRow] = []
    for index, texts in enumerate(loads["string"]):
        floats = loads["float"][index]
        moments, days = loads["datetime"][index], loads["date"][index]
        cells = [
            _calamine_cell(
                path, text, floats[column], moments[column] or days[column], limits
            )
            for column, text in enumerate(texts)
        ]
        grid.append((index + 1, cells))
    return grid


def _calamine_cell(
    path: Path, text: object, number: object, moment: object, limits: ReadLimits
) -> Cell:
    if text is None:
        return EMPTY_CELL
    value = str(text)
    if len(value) > limits.max_cell_chars:
        raise too_large(path.name, "a cell", f"{limits.max_cell_chars:,} characters")
    if number is None:
        return Cell(value, CellKind.DATE) if moment is not None else Cell(value)
    if value in ("true", "false"):
        return Cell(value.upper(), CellKind.BOOLEAN)
    if number_text(value) == value:
        return Cell(value, CellKind.NUMBER)
    return Cell(value)
