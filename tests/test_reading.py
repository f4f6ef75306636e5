"""Reading batch files: formats, encodings, delimiters, sheets and limits."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import openpyxl
import pytest

from bulk_topup.columns import is_report_header
from bulk_topup.errors import InputError
from bulk_topup.models import Cell, CellKind
from bulk_topup.reading import ReadLimits, read_batch

HEADER = "number,operator,type,amount,package_id\n"
NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
REL_NS = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def error_code(path: Path, **options: object) -> str:
    with pytest.raises(InputError) as raised:
        read_batch(path, **options)  # type: ignore[arg-type]
    return raised.value.code


def texts(path: Path, **options: object) -> list[list[str]]:
    table = read_batch(path, **options)  # type: ignore[arg-type]
    return [[cell.text for cell in record.cells] for record in table.records]


def make_xlsx(
    path: Path,
    sheets: Sequence[tuple[str, str]],
    styles: str = "",
    strings: Sequence[str] = (),
    hidden: Sequence[str] = (),
) -> Path:
    """Write a minimal xlsx; each sheet is a name and its <sheetData> rows."""
    entries = [
        f'<sheet name="{name}" sheetId="{index}" r:id="rId{index}"'
        + (' state="hidden"' if name in hidden else "")
        + "/>"
        for index, (name, _) in enumerate(sheets, 1)
    ]
    rels = [
        f'<Relationship Id="rId{index}" Target="worksheets/sheet{index}.xml" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/worksheet"/>'
        for index in range(1, len(sheets) + 1)
    ]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "xl/workbook.xml",
            f"<workbook {NS} {REL_NS}><sheets>{''.join(entries)}</sheets></workbook>",
        )
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            f'relationships">{"".join(rels)}</Relationships>',
        )
        for index, (_, rows) in enumerate(sheets, 1):
            archive.writestr(
                f"xl/worksheets/sheet{index}.xml",
                f"<worksheet {NS}><sheetData>{rows}</sheetData></worksheet>",
            )
        if styles:
            archive.writestr("xl/styles.xml", f"<styleSheet {NS}>{styles}</styleSheet>")
        if strings:
            items = "".join(f"<si><t>{text}</t></si>" for text in strings)
            archive.writestr("xl/sharedStrings.xml", f"<sst {NS}>{items}</sst>")
    return path


def inline_row(number: int, values: Sequence[str]) -> str:
    cells = "".join(
        f'<c r="{chr(65 + index)}{number}" t="inlineStr"><is><t>{value}</t></is></c>'
        for index, value in enumerate(values)
        if value
    )
    return f'<row r="{number}">{cells}</row>'


HEADER_ROW = inline_row(1, ["number", "operator", "type", "amount"])


# --- text files --------------------------------------------------------------


def test_csv_reads_every_cell_as_text(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", HEADER + "01711000001,GP,prepaid,50,\n")
    assert texts(path) == [["01711000001", "GP", "prepaid", "50", ""]]


def test_csv_reports_reader_fields(tmp_path: Path) -> None:
    table = read_batch(write(tmp_path, "b.csv", HEADER + "01711000001,GP,,50,\n"))
    assert (table.format, table.encoding, table.delimiter) == ("csv", "utf-8", ",")
    assert table.header_row == 1
    assert table.sheet is None


def test_csv_quoted_newline_keeps_line_numbers(tmp_path: Path) -> None:
    body = HEADER + '01711000001,GP,prepaid,50,"two\nlines"\n01711000002,GP,,50,\n'
    table = read_batch(write(tmp_path, "b.csv", body))
    assert [record.source_row for record in table.records] == [2, 4]


def test_csv_blank_lines_stay_records(tmp_path: Path) -> None:
    table = read_batch(write(tmp_path, "b.csv", HEADER + "\n01711000001,GP,,50,\n"))
    assert [record.source_row for record in table.records] == [2, 3]


def test_csv_crlf_leaves_no_carriage_return(tmp_path: Path) -> None:
    body = HEADER.replace("\n", "\r\n") + "01711000001,GP,prepaid,50,PKG\r\n"
    table = read_batch(write(tmp_path, "b.csv", body))
    assert table.header[-1] == "package_id"
    assert table.records[0].cells[-1].text == "PKG"


def test_csv_utf8_bom_is_removed(tmp_path: Path) -> None:
    table = read_batch(write(tmp_path, "b.csv", b"\xef\xbb\xbf" + HEADER.encode()))
    assert table.header[0] == "number"
    assert table.encoding == "utf-8"


def test_utf16_tab_text_is_decoded(tmp_path: Path) -> None:
    body = HEADER.replace(",", "\t") + "01711000001\tGP\tprepaid\t৫০\t\n"
    path = write(tmp_path, "b.txt", b"\xff\xfe" + body.encode("utf-16-le"))
    table = read_batch(path)
    assert (table.encoding, table.delimiter) == ("utf-16-le", "\t")
    assert table.records[0].cells[3].text == "৫০"


def test_utf16_without_bom_is_detected(tmp_path: Path) -> None:
    body = HEADER + "01711000001,GP,prepaid,50,\n"
    table = read_batch(write(tmp_path, "b.csv", body.encode("utf-16-le")))
    assert table.encoding == "utf-16-le"


def test_windows_1252_is_the_fallback(tmp_path: Path) -> None:
    body = "number,amount,name\n01711000001,50,Caf\xe9\n".encode("cp1252")
    table = read_batch(write(tmp_path, "b.csv", body))
    assert table.encoding == "windows-1252"
    assert table.records[0].cells[2].text == "Café"


def test_semicolon_file_sets_decimal_comma(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "number;amount\n01711000001;50,00\n")
    table = read_batch(path)
    assert table.delimiter == ";"
    assert table.decimal_comma


def test_sep_directive_names_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "sep=|\nnumber|amount\n01711000001|50\n")
    table = read_batch(path)
    assert table.delimiter == "|"
    assert table.header_row == 2
    assert table.records[0].source_row == 3


def test_title_rows_above_csv_header_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "April payout\n\nnumber,amount\n01711000001,50\n")
    table = read_batch(path)
    assert table.header_row == 3


def test_header_aliases_are_recognised(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "Mobile,Amount (BDT),Offer ID\n017,50,X\n")
    assert read_batch(path).header == ("Mobile", "Amount (BDT)", "Offer ID")


def test_header_only_gives_zero_rows(tmp_path: Path) -> None:
    assert read_batch(write(tmp_path, "b.csv", HEADER)).records == ()


def test_unterminated_quote_is_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", HEADER + '01711000001,GP,prepaid,"50,\n1,2\n')
    assert error_code(path) == "unreadable"


def test_quote_followed_by_text_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", 'number,amount\n"017"11000001,50\n')
    assert texts(path) == [["01711000001", "50"]]


# --- file-level errors -------------------------------------------------------


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    assert error_code(tmp_path / "absent.csv") == "file_not_found"


def test_directory_is_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "batch.csv"
    folder.mkdir()
    assert error_code(folder) == "unreadable"


def test_empty_file_is_no_header(tmp_path: Path) -> None:
    assert error_code(write(tmp_path, "b.csv", "")) == "no_header"


def test_whitespace_file_is_no_header(tmp_path: Path) -> None:
    assert error_code(write(tmp_path, "b.csv", "\r\n \n")) == "no_header"


def test_unrecognised_header_is_no_header(tmp_path: Path) -> None:
    assert error_code(write(tmp_path, "b.csv", "a,b\n1,2\n")) == "no_header"


def test_missing_amount_is_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "number,operator\n01711000001,GP\n")
    assert error_code(path) == "missing_columns"


def test_missing_columns_message_names_column(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "number,operator\n01711000001,GP\n")
    with pytest.raises(InputError) as raised:
        read_batch(path)
    assert "amount" in raised.value.message


def test_two_number_columns_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "mobile,phone,amount\n1,2,3\n")
    assert error_code(path) == "no_header"


def test_unknown_suffix_is_unsupported(tmp_path: Path) -> None:
    assert error_code(write(tmp_path, "b.json", HEADER)) == "unsupported_format"


def test_text_named_xlsx_is_unreadable(tmp_path: Path) -> None:
    assert error_code(write(tmp_path, "b.xlsx", HEADER)) == "unreadable"


def test_nul_bytes_are_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", b"\x00\x01\x02\x00\x00\x07" * 20)
    assert error_code(path) == "unreadable"


def test_zip_of_other_files_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "b.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w/>")
    assert error_code(path) == "unsupported_format"


def test_damaged_zip_is_unreadable(tmp_path: Path) -> None:
    data = make_xlsx(tmp_path / "ok.xlsx", [("S", HEADER_ROW)]).read_bytes()
    path = write(tmp_path, "b.xlsx", data[: len(data) // 2])
    assert error_code(path) == "unreadable"


def test_encrypted_workbook_is_detected(tmp_path: Path) -> None:
    # Office's encrypted container: an OLE2 file holding an EncryptedPackage.
    body = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    body += "EncryptedPackage".encode("utf-16-le") + b"\x00" * 512
    assert error_code(write(tmp_path, "b.xlsx", body)) == "encrypted"


def test_file_over_byte_limit_is_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", HEADER + "01711000001,GP,,50,\n" * 10)
    assert error_code(path, limits=ReadLimits(max_file_bytes=100)) == "file_too_large"


def test_rows_over_limit_are_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", HEADER + "01711000001,GP,,50,\n" * 10)
    assert error_code(path, limits=ReadLimits(max_rows=5)) == "file_too_large"


def test_long_cell_is_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", HEADER + "0" * 100 + ",GP,,50,\n")
    assert error_code(path, limits=ReadLimits(max_cell_chars=50)) == "file_too_large"


def test_wide_row_is_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", HEADER + "1," * 40 + "\n")
    assert error_code(path, limits=ReadLimits(max_columns=20)) == "file_too_large"


# --- xlsx --------------------------------------------------------------------


def test_xlsx_cell_kinds_are_kept(tmp_path: Path) -> None:
    styles = (
        '<numFmts><numFmt numFmtId="164" formatCode="dd/mm/yyyy"/></numFmts>'
        '<cellXfs><xf numFmtId="0"/><xf numFmtId="164"/></cellXfs>'
    )
    row = (
        '<row r="2"><c r="A2"><v>1711000001</v></c>'
        '<c r="B2" t="e"><v>#N/A</v></c>'
        '<c r="C2" t="b"><v>1</v></c>'
        '<c r="D2" s="1"><v>9</v></c></row>'
        '<row r="3"><c r="A3" t="s"><v>0</v></c>'
        '<c r="D3"><f>SUM(D1:D2)</f></c></row>'
    )
    path = make_xlsx(tmp_path / "b.xlsx", [("S", HEADER_ROW + row)], styles, ["GP"])
    cells = read_batch(path).records
    kinds = [cell.kind for cell in cells[0].cells]
    assert kinds == [CellKind.NUMBER, CellKind.ERROR, CellKind.BOOLEAN, CellKind.DATE]
    assert cells[0].cells[3].text == "1900-01-09"
    assert cells[1].cells[0].text == "GP"
    assert cells[1].cells[3].kind is CellKind.FORMULA_WITHOUT_VALUE


def test_xlsx_numbers_keep_exact_digits(tmp_path: Path) -> None:
    row = (
        '<row r="2"><c r="A2"><v>8.8017110001739998E+12</v></c>'
        '<c r="D2"><v>50.0</v></c></row>'
    )
    path = make_xlsx(tmp_path / "b.xlsx", [("S", HEADER_ROW + row)])
    assert texts(path) == [["8801711000173.9998", "", "", "50"]]


def test_xlsx_cached_formula_value_is_used(tmp_path: Path) -> None:
    row = '<row r="2"><c r="D2"><f>20+30</f><v>50</v></c></row>'
    path = make_xlsx(tmp_path / "b.xlsx", [("S", HEADER_ROW + row)])
    assert texts(path) == [["", "", "", "50"]]


def test_xlsx_missing_rows_become_blank(tmp_path: Path) -> None:
    rows = HEADER_ROW + inline_row(2, ["017"]) + inline_row(5, ["018"])
    table = read_batch(make_xlsx(tmp_path / "b.xlsx", [("S", rows)]))
    assert [record.source_row for record in table.records] == [2, 3, 4, 5]


def test_xlsx_header_below_title_rows(tmp_path: Path) -> None:
    rows = inline_row(2, ["Payout"]) + inline_row(4, ["number", "amount"])
    table = read_batch(make_xlsx(tmp_path / "b.xlsx", [("S", rows)]))
    assert table.header_row == 4


def test_xlsx_first_sheet_with_header_wins(tmp_path: Path) -> None:
    sheets = [("Notes", inline_row(1, ["hello"])), ("Batch", HEADER_ROW)]
    table = read_batch(make_xlsx(tmp_path / "b.xlsx", sheets))
    assert table.sheet == "Batch"


def test_xlsx_two_batch_sheets_are_ambiguous(tmp_path: Path) -> None:
    data = HEADER_ROW + inline_row(2, ["01711000001", "", "", "50"])
    path = make_xlsx(tmp_path / "b.xlsx", [("A", data), ("B", data)])
    assert error_code(path) == "ambiguous_sheet"


def test_xlsx_sheet_option_resolves_ambiguity(tmp_path: Path) -> None:
    data = HEADER_ROW + inline_row(2, ["01711000001", "", "", "50"])
    path = make_xlsx(tmp_path / "b.xlsx", [("A", data), ("B", data)])
    assert read_batch(path, sheet="b").sheet == "B"


def test_xlsx_template_sheet_gives_way(tmp_path: Path) -> None:
    data = HEADER_ROW + inline_row(2, ["01711000001", "", "", "50"])
    path = make_xlsx(tmp_path / "b.xlsx", [("Template", HEADER_ROW), ("May", data)])
    assert read_batch(path).sheet == "May"


def test_xlsx_hidden_sheet_is_ignored(tmp_path: Path) -> None:
    data = HEADER_ROW + inline_row(2, ["01711000001", "", "", "50"])
    sheets = [("Old", data), ("New", data)]
    path = make_xlsx(tmp_path / "b.xlsx", sheets, hidden=["Old"])
    assert read_batch(path).sheet == "New"


def test_xlsx_unknown_sheet_option_is_refused(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "b.xlsx", [("A", HEADER_ROW)])
    assert error_code(path, sheet="Z") == "no_header"


def test_xlsx_doctype_is_refused(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "b.xlsx", [("A", HEADER_ROW)])
    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    bomb = b'<!DOCTYPE w [<!ENTITY a "aaaaaaaaaa">]>'
    parts["xl/worksheets/sheet1.xml"] = bomb + parts["xl/worksheets/sheet1.xml"]
    with zipfile.ZipFile(path, "w") as target:
        for name, content in parts.items():
            target.writestr(name, content)
    assert error_code(path) == "unreadable"


def test_openpyxl_workbook_is_read(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["number", "amount"])
    sheet.append([1711000001, 50])
    sheet.append(["01711000002", "=1/0"])
    book.save(tmp_path / "b.xlsx")
    table = read_batch(tmp_path / "b.xlsx")
    assert texts(tmp_path / "b.xlsx") == [["1711000001", "50"], ["01711000002", "=1/0"]]
    assert table.records[1].cells[1].kind is CellKind.FORMULA_WITHOUT_VALUE


def test_too_many_zip_entries_are_refused(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "b.xlsx", [("A", HEADER_ROW)])
    limits = ReadLimits(max_zip_entries=2)
    assert error_code(path, limits=limits) == "file_too_large"


def test_high_ratio_entry_is_refused(tmp_path: Path) -> None:
    filler = " " * (4 * 1024 * 1024)
    path = make_xlsx(tmp_path / "b.xlsx", [("A", HEADER_ROW + filler)])
    limits = ReadLimits(max_compression_ratio=10)
    assert error_code(path, limits=limits) == "file_too_large"


def test_uncompressed_total_over_limit(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "b.xlsx", [("A", HEADER_ROW + " " * 5000)])
    limits = ReadLimits(max_uncompressed_bytes=4000)
    assert error_code(path, limits=limits) == "file_too_large"


# --- ods ---------------------------------------------------------------------


def make_ods(path: Path, rows: Sequence[Sequence[tuple[str, str]]]) -> Path:
    """Write a minimal ods; each cell is (value type, value)."""
    body = []
    for row in rows:
        cells = []
        for kind, value in row:
            if kind == "string":
                cells.append(
                    '<table:table-cell office:value-type="string">'
                    f"<text:p>{value}</text:p></table:table-cell>"
                )
            else:
                cells.append(
                    f'<table:table-cell office:value-type="{kind}" '
                    f'office:{"date-value" if kind == "date" else "value"}="{value}">'
                    f"<text:p>{value}</text:p></table:table-cell>"
                )
        body.append(f"<table:table-row>{''.join(cells)}</table:table-row>")
    content = (
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:'
        'xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:'
        'table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'office:version="1.2"><office:body><office:spreadsheet>'
        f'<table:table table:name="Batch">{"".join(body)}</table:table>'
        "</office:spreadsheet></office:body></office:document-content>"
    )
    manifest = (
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:'
        'xmlns:manifest:1.0"><manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" '
        'manifest:media-type="text/xml"/></manifest:manifest>'
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", content)
        archive.writestr("META-INF/manifest.xml", manifest)
    return path


def test_ods_is_read_with_kinds(tmp_path: Path) -> None:
    rows = [
        [("string", "number"), ("string", "amount")],
        [("float", "1711000001"), ("date", "2024-01-02")],
        [("string", "01711000002"), ("float", "50")],
    ]
    table = read_batch(make_ods(tmp_path / "b.ods", rows))
    assert table.format == "ods"
    assert table.sheet == "Batch"
    first, second = table.records
    assert first.cells[0].text == "1711000001"
    assert first.cells[1].kind is CellKind.DATE
    assert second.cells[0].kind is CellKind.TEXT
    assert second.source_row == 3


# --- zip bomb ----------------------------------------------------------------

BOMB_MIB = 300
MEASURE = """
import json, resource, subprocess, sys, time
start = time.monotonic()
child = subprocess.run(
    [sys.executable, "-c", sys.argv[1], sys.argv[2]],
    capture_output=True, text=True, timeout=60,
)
print(json.dumps({
    "stdout": child.stdout.strip(),
    "stderr": child.stderr[-2000:],
    "seconds": time.monotonic() - start,
    "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""
READ = """
import sys
from bulk_topup.errors import InputError
from bulk_topup.reading import read_batch
try:
    read_batch(sys.argv[1])
    print("read")
except InputError as error:
    print(error.code)
"""


def build_bomb(path: Path, lying: bool) -> Path:
    """Write an xlsx whose sheet expands to BOMB_MIB mebibytes of XML."""
    row = b"<row>" + b'<c t="inlineStr"><is><t>0</t></is></c>' * 8 + b"</row>"
    chunk = row * (1024 * 1024 // len(row))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "xl/workbook.xml",
            f'<workbook {NS} {REL_NS}><sheets><sheet name="S" sheetId="1" '
            'r:id="rId1"/></sheets></workbook>',
        )
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as entry:
            entry.write(f"<worksheet {NS}><sheetData>".encode())
            entry.write(b"<row>" + b"<c t='inlineStr'><is><t>number</t></is></c>")
            entry.write(b"<c t='inlineStr'><is><t>amount</t></is></c></row>")
            for _ in range(BOMB_MIB):
                entry.write(chunk)
            entry.write(b"</sheetData></worksheet>")
    if lying:
        _shrink_declared_sizes(path)
    return path


def _shrink_declared_sizes(path: Path) -> None:
    # Rewrite the central directory so that the sheet claims to be 1 KiB.
    data = bytearray(path.read_bytes())
    marker = b"PK\x01\x02"
    offset = data.find(marker)
    while offset >= 0:
        name_length = int.from_bytes(data[offset + 28 : offset + 30], "little")
        name = bytes(data[offset + 46 : offset + 46 + name_length])
        if name.endswith(b"sheet1.xml"):
            size = int.from_bytes(data[offset + 24 : offset + 28], "little")
            if size != 0xFFFFFFFF:
                data[offset + 24 : offset + 28] = (1024).to_bytes(4, "little")
        offset = data.find(marker, offset + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("lying", [False, True], ids=["honest", "lying"])
def test_zip_bomb_refused_fast_and_small(tmp_path: Path, lying: bool) -> None:
    path = build_bomb(tmp_path / "bomb.xlsx", lying)
    assert path.stat().st_size < 2 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, READ, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured = json.loads(result.stdout)
    assert measured["stdout"] == "file_too_large", measured["stderr"]
    assert measured["seconds"] < 5
    assert measured["peak_kib"] < 200 * 1024


def test_honest_zip_bomb_is_file_too_large(tmp_path: Path) -> None:
    path = build_bomb(tmp_path / "bomb.xlsx", lying=False)
    assert error_code(path) == "file_too_large"


def test_tsv_suffix_prefers_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "b.tsv", "number\tamount\n01711000001\t50\n")
    assert read_batch(path).delimiter == "\t"


def test_report_header_is_recognised() -> None:
    assert is_report_header(["Number", "TrxID", "State"])


def test_xls_is_read_with_row_numbers(tmp_path: Path) -> None:
    xlwt = pytest.importorskip("xlwt")
    book = xlwt.Workbook()
    sheet = book.add_sheet("Batch")
    sheet.write(2, 0, "number")
    sheet.write(2, 1, "amount")
    sheet.write(3, 0, 1711000001)
    sheet.write(3, 1, 50)
    date_style = xlwt.easyxf(num_format_str="DD/MM/YYYY")
    sheet.write(4, 0, "01711000002")
    sheet.write(4, 1, datetime.date(2024, 1, 2), date_style)
    book.save(str(tmp_path / "b.xls"))
    table = read_batch(tmp_path / "b.xls")
    assert (table.format, table.sheet, table.header_row) == ("xls", "Batch", 3)
    first, second = table.records
    assert first.source_row == 4
    assert first.cells[0] == Cell("1711000001", CellKind.NUMBER)
    assert second.cells[1].kind is CellKind.DATE
