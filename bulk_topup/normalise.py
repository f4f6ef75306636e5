"""Normalising single cells: number, operator, type, amount, bill fields.

Each function takes one ``Cell`` and returns the normalised value, or the
reason code of the check it fails. Nothing here raises for bad input. Text is
cleaned first (``clean_text``), so Bengali digits, non-breaking spaces and
zero-width characters never reach a rule.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from .models import Cell, CellKind

SENTINELS = frozenset({"", "na", "n/a", "null", "none", "-"})
NUMBER_PATTERN = re.compile(r"01[3-9]\d{8}")
PREFIX_OWNERS = {
    "013": "GP",
    "017": "GP",
    "014": "BL",
    "019": "BL",
    "015": "TT",
    "016": "AT",
    "018": "RB",
}
OPERATOR_NAMES = {
    "gp": "GP",
    "rb": "RB",
    "at": "AT",
    "bl": "BL",
    "tt": "TT",
    "sk": "SK",
    "bt": "BT",
    "grameenphone": "GP",
    "robi": "RB",
    "airtel": "AT",
    "banglalink": "BL",
    "teletalk": "TT",
    "skitto": "SK",
    "brilliant": "BT",
}
TYPE_NAMES = {
    "prepaid": "prepaid",
    "pre": "prepaid",
    "postpaid": "postpaid",
    "post": "postpaid",
}
DEFAULT_BILL_OPERATORS = ("PBP", "PBD", "DSP", "DSD", "NSP", "NSD", "DPP", "DPD")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Amounts with more digits than this are refused before any arithmetic.
MAX_AMOUNT_DIGITS = 15

_SCIENTIFIC = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)[eE][+-]?\d+")
_FLOAT_ARTEFACT = re.compile(r"(\d+)\.0+")
# Digits, spaces, dashes, dots and brackets, with at most one "+" before the
# digits (after an optional opening bracket, as in "(+88) 017...").
_NUMBER_CHARACTERS = re.compile(r"[\s(]*\+?[\d\s().\-\u2010-\u2015\u2212]*")
_CURRENCY = r"(?:৳|টাকা|taka|bdt|tk\.?)"
_LEADING_CURRENCY = re.compile(rf"^{_CURRENCY}\s*", re.IGNORECASE)
_TRAILING_CURRENCY = re.compile(rf"\s*{_CURRENCY}$", re.IGNORECASE)
_TRAILING_DASH = re.compile(r"\s*/-$")
_DIGITS = re.compile(r"\d+")


def clean_text(text: str) -> str:
    """Return a cell's text with Unicode noise removed, ready for the rules.

    The text is NFKC-normalised and trimmed. Format characters (zero-width,
    bidi marks, BOM) and variation selectors are dropped. Every kind of space
    becomes a plain space, and every decimal digit (Bengali, Arabic-Indic,
    full-width) becomes ASCII.
    """
    if text.isascii():
        return text.strip()
    characters = []
    for char in unicodedata.normalize("NFKC", text):
        category = unicodedata.category(char)
        if category == "Cf" or "\ufe00" <= char <= "\ufe0f":
            continue
        if char.isspace() or category.startswith("Z"):
            characters.append(" ")
        elif category == "Nd":
            characters.append(str(unicodedata.decimal(char)))
        else:
            characters.append(char)
    return "".join(characters).strip()


def is_empty(text: str) -> bool:
    """Return whether cleaned text is empty or a sentinel such as NA or null."""
    return text.casefold() in SENTINELS


def kind_problem(cell: Cell) -> str | None:
    """Return the reason code for a formula cell without a usable value."""
    if cell.kind is CellKind.ERROR:
        return "formula_error"
    if cell.kind is CellKind.FORMULA_WITHOUT_VALUE:
        return "formula_without_cached_value"
    return None


@dataclass(frozen=True)
class Outcome:
    """The result of one rule: a value, or a reason code, and any warning."""

    value: str | None = None
    reason: str | None = None
    warning: str | None = None


def normalise_number(cell: Cell) -> Outcome:
    """Normalise a mobile number to ``01XXXXXXXXX``, or return why it is invalid."""
    problem = kind_problem(cell)
    if problem:
        return Outcome(reason=problem)
    if cell.kind in (CellKind.DATE, CellKind.BOOLEAN):
        return Outcome(reason="invalid_number")
    text = clean_text(cell.text)
    if is_empty(text):
        return Outcome(reason="missing_number")
    digits = _number_digits(text, cell.kind)
    if digits is None:
        return Outcome(reason="invalid_number")
    if digits == "":
        return Outcome(reason="number_scientific_notation")
    number = _strip_country_code(digits)
    if not NUMBER_PATTERN.fullmatch(number):
        return Outcome(reason="invalid_number")
    return Outcome(value=number)


def _number_digits(text: str, kind: CellKind) -> str | None:
    """Return the digits of a number cell, "" for scientific notation, or None."""
    if kind is CellKind.NUMBER:
        return text if text.isdigit() else None
    if _SCIENTIFIC.fullmatch(text.replace(" ", "")):
        return ""
    artefact = _FLOAT_ARTEFACT.fullmatch(text)
    if artefact:
        return artefact.group(1)
    if not _NUMBER_CHARACTERS.fullmatch(text):
        return None
    return "".join(_DIGITS.findall(text))


def _strip_country_code(digits: str) -> str:
    if digits.startswith("00880"):
        digits = digits[2:]
    if digits.startswith("880"):
        rest = digits[3:]
        if rest.startswith("0"):
            return rest
        if rest.startswith("1"):
            return "0" + rest
        return digits
    if len(digits) == 10 and digits.startswith("1"):
        return "0" + digits
    return digits


def owns_prefix(operator: str, number: str) -> bool:
    """Return whether a number's prefix belongs to the operator's ranges.

    Skitto runs on Grameenphone's ranges, and Brilliant numbers have no known
    shape, so neither is ever a mismatch there.
    """
    prefix = number[:3]
    if operator == "BT":
        return True
    if operator == "SK":
        return prefix in ("013", "017")
    return PREFIX_OWNERS.get(prefix) == operator


def normalise_operator(cell: Cell, number: str | None) -> Outcome:
    """Normalise an operator code or name, inferring it when empty."""
    problem = kind_problem(cell)
    if problem:
        return Outcome(reason=problem)
    text = clean_text(cell.text)
    if is_empty(text):
        if number is None:
            # Nothing to infer from: the number's own reason rejects the row.
            return Outcome()
        return Outcome(value=PREFIX_OWNERS[number[:3]], warning="operator_inferred")
    code = OPERATOR_NAMES.get(text.casefold())
    if code is None or cell.kind in (CellKind.DATE, CellKind.BOOLEAN):
        return Outcome(reason="unknown_operator")
    if number is not None and not owns_prefix(code, number):
        return Outcome(value=code, warning="operator_prefix_mismatch")
    return Outcome(value=code)


def normalise_type(cell: Cell) -> Outcome:
    """Normalise a connection type to prepaid or postpaid; empty is prepaid."""
    problem = kind_problem(cell)
    if problem:
        return Outcome(reason=problem)
    text = clean_text(cell.text)
    if is_empty(text):
        return Outcome(value="prepaid", warning="type_defaulted")
    key = re.sub(r"[\s_\-]", "", text.casefold())
    value = TYPE_NAMES.get(key)
    if value is None or cell.kind is not CellKind.TEXT:
        return Outcome(reason="invalid_type")
    return Outcome(value=value)


@dataclass(frozen=True)
class Amount:
    """An amount as an exact Decimal, or the reason it cannot be read."""

    value: Decimal | None = None
    reason: str | None = None


def parse_amount(cell: Cell, decimal_comma: bool) -> Amount:
    """Read an amount cell as an exact Decimal, without any limit checks.

    Currency marks (৳, Tk, Tk., BDT, taka, টাকা, a trailing /-) are removed;
    thousands may be grouped in threes or in the lakh style (1,00,000). With
    ``decimal_comma`` the comma is the decimal mark and the dot groups.
    """
    problem = kind_problem(cell)
    if problem:
        return Amount(reason=problem)
    if cell.kind is CellKind.DATE:
        return Amount(reason="amount_is_date")
    if cell.kind is CellKind.BOOLEAN:
        return Amount(reason="invalid_amount")
    text = clean_text(cell.text)
    if is_empty(text):
        return Amount(reason="missing_amount")
    comma = decimal_comma and cell.kind is not CellKind.NUMBER
    plain = _plain_amount(_strip_currency(text), comma)
    if plain is None:
        return Amount(reason="invalid_amount")
    return Amount(value=Decimal(plain))


def _strip_currency(text: str) -> str:
    for _ in range(2):
        text = _TRAILING_DASH.sub("", text)
        text = _LEADING_CURRENCY.sub("", text)
        text = _TRAILING_CURRENCY.sub("", text)
    return text.strip()


def _plain_amount(text: str, decimal_comma: bool) -> str | None:
    """Return ``digits[.digits]`` with grouping removed, or None if malformed."""
    decimal, group = (",", ".") if decimal_comma else (".", ",")
    whole, separator, fraction = text.partition(decimal)
    if separator and not (fraction.isascii() and fraction.isdigit()):
        return None
    digits = _ungroup(whole, group)
    if digits is None or len(digits) > MAX_AMOUNT_DIGITS:
        return None
    return f"{digits}.{fraction}" if fraction else digits


def _ungroup(whole: str, group: str) -> str | None:
    if whole.isascii() and whole.isdigit():
        return whole
    for separator in (group, " "):
        sep = re.escape(separator)
        western = rf"\d{{1,3}}(?:{sep}\d{{3}})+"
        lakh = rf"\d{{1,2}}(?:{sep}\d{{2}})*{sep}\d{{3}}"
        if re.fullmatch(western, whole) or re.fullmatch(lakh, whole):
            return whole.replace(separator, "")
    return None


def whole_taka(amount: Decimal) -> int | None:
    """Return an amount as int Taka, or None when it has a non-zero fraction."""
    if amount != amount.to_integral_value():
        return None
    return int(amount)


def normalise_bill_operator(cell: Cell, allowed: frozenset[str]) -> Outcome:
    """Normalise a bill operator code (any case) against the allowed codes."""
    problem = kind_problem(cell)
    if problem:
        return Outcome(reason=problem)
    code = clean_text(cell.text).upper()
    if code not in allowed:
        return Outcome(reason="invalid_bill_operator")
    return Outcome(value=code)


def normalise_month(cell: Cell) -> Outcome:
    """Normalise a month name, abbreviation or number 1-12 to its English name."""
    problem = kind_problem(cell)
    if problem:
        return Outcome(reason=problem)
    text = clean_text(cell.text).casefold()
    if text.isdigit() and len(text) <= 2 and 1 <= int(text) <= 12:
        return Outcome(value=MONTHS[int(text) - 1])
    for month in MONTHS:
        name = month.casefold()
        if text == name or (len(text) >= 3 and name.startswith(text)):
            return Outcome(value=month)
    return Outcome(reason="invalid_month")


def parse_bill_amount(cell: Cell, decimal_comma: bool) -> Amount:
    """Read a bill amount: more than zero, with at most two decimals (poisha)."""
    amount = parse_amount(cell, decimal_comma)
    if amount.value is None:
        return amount
    if amount.value <= 0:
        return Amount(reason="amount_below_minimum")
    if amount.value != amount.value.quantize(Decimal("0.01")):
        return Amount(reason="invalid_amount")
    return Amount(value=amount.value.quantize(Decimal("0.01")))
