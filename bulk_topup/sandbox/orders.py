"""Validation of recharge and bill-payment bodies, as the real API checks them.

A valid body becomes an order; an invalid one becomes a ``Refusal`` with the
message that the sandbox returns in ``{"result": false, "message": ...}``.
Nothing here touches the ledger.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from bulk_topup.models import API_MINIMUM_AMOUNT, OPERATORS, TYPES
from bulk_topup.sandbox.config import MAX_BALANCE
from bulk_topup.sandbox.offers import DRIVE, Offer, find_offer

NUMBER_PATTERN = re.compile(r"01\d{9}")
# Bill operator codes seen in a public integration of the API: Palli Bidyut,
# DESCO, NESCO and DPDC, P for prepaid meters and D for postpaid bills.
BILL_OPERATORS = ("PBP", "PBD", "DSP", "DSD", "NSP", "NSD", "DPP", "DPD")
_MONTHS = (
    "january february march april may june july august september october "
    "november december"
).split()
_MONTH_PATTERN = re.compile(
    r"(?P<name>[a-z]+)(?:[\s,/-]+\d{4})?|\d{4}-(?:0[1-9]|1[0-2])", re.IGNORECASE
)
MAX_TRXID_LENGTH = 64


@dataclass(frozen=True)
class Refusal:
    """A request the API rejects; ``message`` is the text of its response."""

    message: str


@dataclass(frozen=True)
class RechargeOrder:
    """A valid recharge: amount in whole Taka, with the offer it buys, if any."""

    trxid: str
    number: str
    operator: str
    type: str
    amount: int
    offer: Offer | None

    @property
    def is_drive(self) -> bool:
        """Whether the recharge is paid from the drive balance."""
        return self.offer is not None and self.offer.type == DRIVE


@dataclass(frozen=True)
class BillOrder:
    """A valid bill payment; the amount may carry poisha."""

    trxid: str
    bill_operator: str
    bill_number: str
    amount: Decimal
    mobile_number: str
    month: str
    note: str


class _Invalid(Exception):
    """A failed check inside this module; becomes a Refusal at the boundary."""


def validate_recharge(body: Mapping[str, object]) -> RechargeOrder | Refusal:
    """Check a recharge body and return the order or the refusal."""
    try:
        return _build_recharge(body)
    except _Invalid as error:
        return Refusal(str(error))


def validate_bill(body: Mapping[str, object]) -> BillOrder | Refusal:
    """Check a bill-payment body and return the order or the refusal."""
    try:
        return _build_bill(body)
    except _Invalid as error:
        return Refusal(str(error))


def read_trxid(body: Mapping[str, object]) -> str | None:
    """Return the body's trxid when it is a usable one, else None."""
    trxid = body.get("trxid")
    if isinstance(trxid, str) and 0 < len(trxid.strip()) <= MAX_TRXID_LENGTH:
        return trxid

    return None


def _build_recharge(body: Mapping[str, object]) -> RechargeOrder:
    trxid = _require_trxid(body)
    number = _require_number(body, "number")
    operator = body.get("operator")
    if operator not in OPERATORS:
        raise _Invalid(
            f"Invalid operator {operator!r}: expected one of {' '.join(OPERATORS)}."
        )
    recharge_type = body.get("type")
    if recharge_type not in TYPES:
        raise _Invalid(f"Invalid type {recharge_type!r}: expected prepaid or postpaid.")
    if operator == "SK" and recharge_type != "prepaid":
        raise _Invalid("Invalid type for Skitto (SK): it must be prepaid.")
    amount = _require_whole_taka(body.get("amount"))
    offer = _find_package(body.get("package_id"), str(operator), amount)

    return RechargeOrder(
        trxid=trxid,
        number=number,
        operator=str(operator),
        type=str(recharge_type),
        amount=amount,
        offer=offer,
    )


def _build_bill(body: Mapping[str, object]) -> BillOrder:
    trxid = _require_trxid(body)
    bill_operator = body.get("billOperator")
    if not isinstance(bill_operator, str) or bill_operator.upper() not in (
        BILL_OPERATORS
    ):
        raise _Invalid(
            f"Invalid billOperator {bill_operator!r}: expected one of "
            f"{' '.join(BILL_OPERATORS)}."
        )
    bill_number = body.get("billNumber")
    if isinstance(bill_number, int) and not isinstance(bill_number, bool):
        bill_number = str(bill_number)
    if not isinstance(bill_number, str) or not bill_number.strip():
        raise _Invalid("Missing billNumber: send the account or meter number.")
    note = body.get("note") or ""
    if not isinstance(note, str):
        raise _Invalid("Invalid note: it must be text.")

    return BillOrder(
        trxid=trxid,
        bill_operator=bill_operator.upper(),
        bill_number=bill_number.strip(),
        amount=_require_bill_amount(body.get("billAmount")),
        mobile_number=_require_number(body, "mobileNumber"),
        month=_require_month(body.get("monthName")),
        note=note,
    )


def _require_trxid(body: Mapping[str, object]) -> str:
    trxid = read_trxid(body)
    if trxid is None:
        raise _Invalid(
            "Missing or invalid trxid: send a non-empty string of at most "
            f"{MAX_TRXID_LENGTH} characters."
        )

    return trxid


def _require_number(body: Mapping[str, object], field: str) -> str:
    # The number itself stays out of the message, because clients log it.
    number = body.get(field)
    if not isinstance(number, str) or not NUMBER_PATTERN.fullmatch(number):
        raise _Invalid(f"Invalid {field}: expected 11 digits in the form 01XXXXXXXXX.")

    return number


def _require_whole_taka(value: object) -> int:
    amount = _to_decimal(value)
    if amount is None or amount != amount.to_integral_value():
        raise _Invalid(f"Invalid amount {value!r}: expected a whole number of Taka.")
    _check_maximum("amount", amount)
    if amount < API_MINIMUM_AMOUNT:
        raise _Invalid(
            f"Invalid amount {value!r}: the minimum is {API_MINIMUM_AMOUNT} Taka."
        )

    return int(amount)


def _require_bill_amount(value: object) -> Decimal:
    amount = _to_decimal(value)
    if amount is None or amount <= 0:
        raise _Invalid(
            f"Invalid billAmount {value!r}: expected a positive number of Taka."
        )
    _check_maximum("billAmount", amount)
    if amount != amount.quantize(Decimal("0.01")):
        raise _Invalid(
            f"Invalid billAmount {value!r}: Taka has at most 2 decimal places."
        )

    return amount


def _check_maximum(field: str, amount: Decimal) -> None:
    # Checked before any conversion to int, which would be slow for 1E+999999.
    if amount > MAX_BALANCE:
        raise _Invalid(
            f"Invalid {field} {amount}: it exceeds the largest possible balance, "
            f"{MAX_BALANCE:,} Taka."
        )


def _to_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None

    return number if number.is_finite() else None


def _find_package(package_id: object, operator: str, amount: int) -> Offer | None:
    if package_id is None or package_id == "":
        return None
    if isinstance(package_id, int) and not isinstance(package_id, bool):
        package_id = str(package_id)
    if not isinstance(package_id, str):
        raise _Invalid(f"Invalid package_id {package_id!r}: expected an offer id.")
    offer = find_offer(package_id)
    if offer is None:
        raise _Invalid(
            f"Unknown package_id {package_id!r}: list the offers with /api/drives."
        )
    if offer.operator != operator:
        raise _Invalid(
            f"Package {package_id!r} is a {offer.operator} offer, not {operator}."
        )
    if offer.price != amount:
        raise _Invalid(
            f"Invalid amount {amount} for package {package_id!r}: its price is "
            f"{offer.price} Taka."
        )

    return offer


def _require_month(value: object) -> str:
    match = _MONTH_PATTERN.fullmatch(value.strip()) if isinstance(value, str) else None
    name = match.group("name") if match else None
    if match is None or (name is not None and not _is_month_name(name)):
        raise _Invalid(
            f"Invalid monthName {value!r}: expected a month such as April, "
            "Apr 2026 or 2026-04."
        )

    return str(value).strip()


def _is_month_name(name: str) -> bool:
    lowered = name.lower()
    return any(lowered in (month, month[:3]) for month in _MONTHS)
