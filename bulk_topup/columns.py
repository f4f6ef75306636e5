"""Column names of batch files, their aliases, and header recognition.

A header cell is matched by its key: the name lower-cased with every character
that is not a letter or a digit removed, so ``Package ID``, ``package_id`` and
``PACKAGE-ID`` all mean ``package_id``. A recharge batch needs ``number`` and
``amount``; a bill batch is recognised by its ``bill*`` columns.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import InputError

# Canonical recharge column -> accepted header keys.
RECHARGE_ALIASES: Mapping[str, frozenset[str]] = {
    "number": frozenset(
        {
            "number",
            "mobile",
            "msisdn",
            "phone",
            "mobilenumber",
            "mobileno",
            "phonenumber",
            "phoneno",
        }
    ),
    "operator": frozenset({"operator", "operatorcode", "operatorname", "telco"}),
    "type": frozenset({"type", "connectiontype", "rechargetype", "simtype"}),
    "amount": frozenset({"amount", "taka", "amountbdt", "amounttaka", "amounttk"}),
    "package_id": frozenset({"packageid", "package", "offerid", "driveid"}),
    "reference": frozenset({"reference", "ref", "referenceid", "refid"}),
    "name": frozenset({"name"}),
    "note": frozenset({"note", "notes"}),
}
RECHARGE_REQUIRED = ("number", "amount")

# Bill columns keep the API's field names, matched case-insensitively.
BILL_ALIASES: Mapping[str, frozenset[str]] = {
    "billOperator": frozenset({"billoperator"}),
    "billNumber": frozenset({"billnumber"}),
    "billAmount": frozenset({"billamount"}),
    "mobileNumber": frozenset({"mobilenumber"}),
    "monthName": frozenset({"monthname"}),
    "note": frozenset({"note"}),
}
BILL_REQUIRED = (
    "billOperator",
    "billNumber",
    "billAmount",
    "mobileNumber",
    "monthName",
)
BILL_MARKERS = frozenset({"billoperator", "billnumber", "billamount"})

# A report written by this tool is recognised by these two columns.
REPORT_MARKERS = frozenset({"trxid", "state"})

# Title rows above the header are skipped, within this many rows.
HEADER_SEARCH_ROWS = 20


def header_key(name: str) -> str:
    """Return the key a header cell is matched by: lower case, letters and digits."""
    text = unicodedata.normalize("NFKC", name).casefold()
    return "".join(char for char in text if char.isalnum())


def is_report_header(header: Iterable[str]) -> bool:
    """Return whether a header is that of a report written by this tool."""
    return REPORT_MARKERS <= {header_key(name) for name in header}


@dataclass(frozen=True)
class HeaderMatch:
    """The mapping of one row's cells to batch columns.

    ``columns`` maps each recognised canonical column to its position;
    ``conflicts`` lists canonical columns named by more than one cell.
    """

    kind: str
    columns: Mapping[str, int]
    missing: tuple[str, ...]
    conflicts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def is_complete(self) -> bool:
        """Whether every required column is present and no column is named twice."""
        return not self.missing and not self.conflicts


def match_header(cells: Sequence[str]) -> HeaderMatch:
    """Map a row of header cells to the recharge or bill columns."""
    keys = [header_key(cell) for cell in cells]
    if BILL_MARKERS & set(keys):
        return _match(keys, "bill", BILL_ALIASES, BILL_REQUIRED)
    return _match(keys, "recharge", RECHARGE_ALIASES, RECHARGE_REQUIRED)


def _match(
    keys: Sequence[str],
    kind: str,
    aliases: Mapping[str, frozenset[str]],
    required: Sequence[str],
) -> HeaderMatch:
    positions: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        for canonical, names in aliases.items():
            if key in names:
                positions.setdefault(canonical, []).append(index)
    columns = {name: found[0] for name, found in positions.items()}
    conflicts = {
        name: tuple(found) for name, found in positions.items() if len(found) > 1
    }
    missing = tuple(name for name in required if name not in columns)
    return HeaderMatch(kind, columns, missing, conflicts)


def find_header(
    rows: Iterable[Sequence[str]], limit: int = HEADER_SEARCH_ROWS
) -> tuple[int, HeaderMatch] | tuple[None, HeaderMatch | None]:
    """Find the first of the leading rows that names every required column.

    Returns the row's position and its match. When no row qualifies, the
    position is None and the match is the row with the most recognised columns
    (None when no row names any), so that the caller can say what is missing.
    """
    best: HeaderMatch | None = None
    for position, cells in enumerate(rows):
        if position >= limit:
            break
        match = match_header(cells)
        if match.is_complete:
            return position, match
        if match.columns and (best is None or len(match.columns) > len(best.columns)):
            best = match
    return None, best


def describe_aliases(canonical: str) -> str:
    """Return the accepted header names of a column, for error messages."""
    names = RECHARGE_ALIASES.get(canonical) or BILL_ALIASES.get(canonical)
    if not names:
        return canonical
    others = sorted(name for name in names if name != header_key(canonical))
    if not others:
        return canonical
    return f"{canonical} (also accepted: {', '.join(others)})"


def header_error(file_name: str, partial: HeaderMatch | None) -> InputError:
    """Build the error for a file whose header names too few"""
    if partial is None:
        return InputError(
            f"{file_name} has no recognisable header in its first "
            f"{HEADER_SEARCH_ROWS} rows; the header must name at least "
            "the number and amount columns",
            code="no_header",
        )
    if partial.conflicts:
        name = sorted(partial.conflicts)[0]
        return InputError(
            f"{file_name} has several columns that mean {name}; keep one and "
            "rename or delete the others",
            code="no_header",
        )
    wanted = "; ".join(describe_aliases(name) for name in partial.missing)
    return InputError(
        f"{file_name} has no {', '.join(partial.missing)} column; add a column "
        f"named {wanted}",
        code="missing_columns",
    )
