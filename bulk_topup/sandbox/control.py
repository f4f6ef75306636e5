"""The sandbox's own paths, for tests and people: balances, ledger, requests.

They need no credentials, because they exist only on this local server.
"""

from __future__ import annotations

from decimal import Decimal

from bulk_topup.sandbox.config import MAX_BALANCE
from bulk_topup.sandbox.ledger import Ledger
from bulk_topup.sandbox.replies import Body, Call, Reply, error_reply, ok_reply


class ControlEndpoints:
    """Handlers of ``/sandbox/balance``, ``/sandbox/ledger``, ``/sandbox/requests``."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def set_balances(self, call: Call) -> Reply:
        """Set the main and drive balances from ``balance`` and ``drive_balance``."""
        balance = _read_taka(call.body, "balance")
        drive = _read_taka(call.body, "drive_balance")
        if isinstance(balance, str):
            return error_reply(400, balance)
        if isinstance(drive, str):
            return error_reply(400, drive)
        if balance is None and drive is None:
            return error_reply(
                400, "Missing balance and drive_balance: send at least one."
            )
        self._ledger.set_balances(balance, drive)
        main, drive_balance = self._ledger.balances(call.now)

        return ok_reply(
            {"result": True, "balance": main, "drive_balance": drive_balance}
        )

    def show_ledger(self, call: Call) -> Reply:
        """Return the balances, request counts and every charge with its status."""
        balance, drive_balance = self._ledger.balances(call.now)
        by_path = self._ledger.count_requests()
        charges = [charge.to_json(call.now) for charge in self._ledger.charges()]

        return ok_reply(
            {
                "balance": balance,
                "drive_balance": drive_balance,
                # The count covers the API only, so that reading the ledger
                # does not change it; requests_by_path shows every path.
                "requests": sum(
                    count for path, count in by_path.items() if path.startswith("/api/")
                ),
                "requests_by_path": by_path,
                "charges": charges,
            }
        )

    def list_requests(self, call: Call) -> Reply:
        """Return every request received, oldest first."""
        entries = [entry.to_json() for entry in self._ledger.requests()]
        return ok_reply({"requests": entries})


def _read_taka(body: Body, field: str) -> Decimal | str | None:
    """Return the field as Taka, None when absent, or an error message."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return f"Invalid {field} {value!r}: send a number of Taka."
    amount = Decimal(value)
    if not 0 <= amount <= MAX_BALANCE:
        return f"Invalid {field} {value}: send 0 to {MAX_BALANCE:,} Taka."
    if amount != amount.quantize(Decimal("0.01")):
        return f"Invalid {field} {value}: Taka has at most 2 decimal places."

    return amount
