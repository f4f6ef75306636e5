"""Write the sample batches in sample_batches/ from a fixed seed.

The numbers are invented. A few rows carry the mistakes that real batches
have: a lost leading zero, a country code, spaces and dashes, Bengali digits,
and some that cannot be sent (a bad number, half a Taka, an unknown
operator, Skitto as postpaid).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import xlsxwriter

FOLDER = Path(__file__).resolve().parent.parent / "sample_batches"
PREFIXES = {"GP": "017", "RB": "018", "AT": "016", "BL": "019", "TT": "015"}
AMOUNTS = (20, 30, 49, 50, 100, 150, 200, 299, 500)
NAMES = (
    "Rahim",
    "Karim",
    "Fatema",
    "Ayesha",
    "Sumon",
    "Nasrin",
    "Jamal",
    "Rupa",
    "Habib",
    "Shirin",
    "Tanvir",
    "Mitu",
    "Sabbir",
    "Laila",
    "Rafiq",
    "Keya",
)
HEADER = ["number", "operator", "type", "amount", "reference", "name", "note"]


def _rows(rng: random.Random) -> list[list[str]]:
    rows = []
    operators = list(PREFIXES) + ["SK"]
    for index in range(1, 211):
        operator = operators[index % len(operators)]
        prefix = PREFIXES.get(operator, "017")
        number = prefix + f"{rng.randrange(10**8):08d}"
        type_ = "postpaid" if operator != "SK" and index % 9 == 0 else "prepaid"
        amount = str(rng.choice(AMOUNTS))
        name = rng.choice(NAMES)
        rows.append([number, operator, type_, amount, f"PAY-{index:04d}", name, ""])
    _add_mistakes(rows)
    return rows


def _add_mistakes(rows: list[list[str]]) -> None:
    rows[3][0] = rows[3][0][1:]  # a lost leading zero, recovered
    rows[4][0] = "+880 " + rows[4][0][1:5] + "-" + rows[4][0][5:]
    rows[5][0] = rows[5][0].translate(str.maketrans("0123456789", "০১২৩৪৫৬৭৮৯"))
    rows[6][1] = ""  # operator left out: inferred from the prefix
    rows[7][3] = "Tk. 1,000"
    rows[8][2] = "Post Paid"
    rows[20][0] = "0171234567"  # ten digits with the zero: a digit is missing
    rows[40][3] = "50.5"
    rows[60][1] = "Citycell"
    rows[80][1], rows[80][2] = "SK", "postpaid"
    rows[100] = [
        "01911000000",
        "BT",
        "prepaid",
        "100",
        "PAY-0101",
        "Brilliant user",
        "",
    ]


def main() -> None:
    """Write the CSV and XLSX sample batches."""
    rows = _rows(random.Random(20261204))
    FOLDER.mkdir(exist_ok=True)
    with (FOLDER / "reseller-batch.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    workbook = xlsxwriter.Workbook(str(FOLDER / "reseller-batch.xlsx"))
    sheet = workbook.add_worksheet("Payouts")
    for column, name in enumerate(HEADER):
        sheet.write_string(0, column, name)
    for index, row in enumerate(rows, 1):
        for column, value in enumerate(row):
            sheet.write_string(index, column, value)
    workbook.close()


if __name__ == "__main__":
    main()
