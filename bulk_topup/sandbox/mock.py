"""Responses of ``/api/sandbox/test`` and the offer filter of ``/api/drives``.

The vendor's own sandbox path returns mock results without charging, so these
responses never touch the ledger. Recharge and bill payloads are still checked
as the real paths check them, so a client can test its bodies here.
"""

from __future__ import annotations

from collections.abc import Mapping

from bulk_topup.sandbox.offers import DRIVE, OFFER_OPERATORS, REGULAR, select_offers
from bulk_topup.sandbox.orders import Refusal, validate_bill, validate_recharge

MOCK_ACTIONS = ("recharge", "status", "balance", "drives", "bill-pay")
MOCK_BALANCE = 10_000
MOCK_DRIVE_BALANCE = 5_000
Body = Mapping[str, object]


def select_drives(body: Body) -> dict[str, object]:
    """Return the offers of the body's ``operator`` and ``type``, as a response."""
    operator = body.get("operator") or "ALL"
    if operator != "ALL" and operator not in OFFER_OPERATORS:
        choices = " ".join((*OFFER_OPERATORS, "ALL"))
        return _failure(f"Invalid operator {operator!r}: expected one of {choices}.")
    offer_type = body.get("type") or None
    if offer_type not in (None, REGULAR, DRIVE):
        return _failure(f"Invalid type {offer_type!r}: expected regular or drive.")
    offers = select_offers(
        None if operator == "ALL" else str(operator),
        None if offer_type is None else str(offer_type),
    )

    return {"result": True, "drives": [offer.to_json() for offer in offers]}


def mock_response(body: Body) -> dict[str, object]:
    """Return the mock response to ``{"action": ..., "payload": {...}}``."""
    action = body.get("action")
    payload = body.get("payload", {})
    if not isinstance(payload, Mapping):
        return _failure("Invalid payload: send a JSON object.")
    if action == "recharge":
        return _mock_payment(validate_recharge(payload), "Recharge successful")
    if action == "bill-pay":
        message = "Bill payment transaction successful"
        return _mock_payment(validate_bill(payload), message)
    if action == "status":
        return {"result": True, "status": "Success"}
    if action == "balance":
        return {
            "result": True,
            "balance": MOCK_BALANCE,
            "driveBalance": MOCK_DRIVE_BALANCE,
        }
    if action == "drives":
        return select_drives(payload)

    return _failure(
        f"Invalid action {action!r}: expected one of {', '.join(MOCK_ACTIONS)}."
    )


def _mock_payment(order: object, message: str) -> dict[str, object]:
    if isinstance(order, Refusal):
        return _failure(order.message)

    return {"result": True, "message": message}


def _failure(message: str) -> dict[str, object]:
    return {"result": False, "message": message}
