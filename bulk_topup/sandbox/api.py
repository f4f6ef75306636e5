"""The sandbox's endpoints: the Success TopUp API and its control paths.

Every request, whatever its path, is stored in the ledger in the same
transaction as the work it causes, and that transaction is committed before
the response is written. That is what lets the after-charge faults charge first
and fail afterwards, exactly as a real outage after the charge would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from bulk_topup.sandbox import faults
from bulk_topup.sandbox.config import SandboxConfig
from bulk_topup.sandbox.control import ControlEndpoints
from bulk_topup.sandbox.faults import Draws, pick_fault
from bulk_topup.sandbox.jsonio import body_sha256, parse_json
from bulk_topup.sandbox.ledger import (
    CANCEL,
    DRIVE_PURSE,
    MAIN_PURSE,
    SUCCESS,
    Charge,
    Ledger,
    RequestEntry,
    taka_to_poisha,
)
from bulk_topup.sandbox.mock import mock_response, select_drives
from bulk_topup.sandbox.orders import (
    BillOrder,
    RechargeOrder,
    Refusal,
    read_trxid,
    validate_bill,
    validate_recharge,
)
from bulk_topup.sandbox.replies import (
    Body,
    Call,
    Reply,
    error_reply,
    ok_reply,
    refusal_reply,
)
from bulk_topup.sandbox.server import Request, Response, json_response
from bulk_topup.sandbox.webhooks import WebhookSender

RECHARGE_PATH = "/api/recharge"
BILL_PATH = "/api/bill-pay"
RECHARGE_MESSAGE = "Recharge successful"
BILL_MESSAGE = "Bill payment transaction successful"
NOT_FOUND_MESSAGE = "Transaction not found"


Handler = Callable[[Call], Reply]


class SandboxApp:
    """Routes requests to their handlers over one ledger."""

    def __init__(
        self,
        config: SandboxConfig,
        ledger: Ledger,
        clock: Callable[[], float],
        webhooks: WebhookSender | None = None,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._clock = clock
        self._webhooks = webhooks
        self._draws = Draws(config.seed)
        control = ControlEndpoints(ledger)
        self._routes: dict[str, tuple[str, Handler]] = {
            RECHARGE_PATH: ("POST", self._recharge),
            BILL_PATH: ("POST", self._pay_bill),
            "/api/status": ("POST", self._status),
            "/api/balance": ("POST", self._balance),
            "/api/drives": ("POST", self._drives),
            "/api/sandbox/test": ("POST", self._sandbox_test),
            "/sandbox/balance": ("POST", control.set_balances),
            "/sandbox/ledger": ("GET", control.show_ledger),
            "/sandbox/requests": ("GET", control.list_requests),
        }

    async def handle(self, request: Request) -> Response | None:
        """Handle one request; return its response, or None to drop the connection."""
        now = self._clock()
        body = _parse_object(request.body)
        entry = self._describe(request, body, now)
        with self._ledger.transaction():
            self._ledger.record_request(entry)
            reply = self._dispatch(request, body, entry, now)
        if reply.charge is not None and self._webhooks is not None:
            self._webhooks.push_charge(reply.charge, now)
        delay = self._config.latency_ms / 1000 + reply.delay
        if delay > 0:
            await asyncio.sleep(delay)

        return reply.response

    def _describe(
        self, request: Request, body: Body | None, now: float
    ) -> RequestEntry:
        if body is None:
            digest = hashlib.sha256(request.body).hexdigest()
            return RequestEntry(now, request.method, request.path, None, None, digest)
        trxid = read_trxid(body)
        digest = body_sha256(body)
        action = body.get("action") if request.path == "/api/sandbox/test" else None
        draw_key = None
        if request.path in (RECHARGE_PATH, BILL_PATH):
            draw_key = f"{request.path} {trxid or digest}"

        return RequestEntry(
            at=now,
            method=request.method,
            path=request.path,
            action=action if isinstance(action, str) else None,
            trxid=trxid,
            body_sha256=digest,
            draw_key=draw_key,
        )

    def _dispatch(
        self, request: Request, body: Body | None, entry: RequestEntry, now: float
    ) -> Reply:
        route = self._routes.get(request.path)
        if route is None:
            return error_reply(404, f"No such path {request.path!r}")
        method, handler = route
        if request.method != method:
            message = {"result": False, "message": f"Use {method} for {request.path}"}
            return Reply(json_response(405, message, (("Allow", method),)))
        if body is None and method == "POST":
            return error_reply(400, "Invalid body: send a JSON object")
        attempt = 0
        if entry.draw_key is not None:
            # The request itself is already stored, so it is one of the count.
            attempt = self._ledger.count_draw_key(entry.draw_key) - 1

        return handler(Call(body or {}, now, entry.draw_key or "", attempt))

    def _recharge(self, call: Call) -> Reply:
        return self._pay(call, validate_recharge)

    def _pay_bill(self, call: Call) -> Reply:
        return self._pay(call, validate_bill)

    def _pay(
        self,
        call: Call,
        validate: Callable[[Body], RechargeOrder | BillOrder | Refusal],
    ) -> Reply:
        draw = self._draws.draw("fault", call.draw_key, str(call.attempt))
        fault = pick_fault(self._config.faults, draw)
        if fault in faults.BEFORE_CHARGE_FAULTS:
            return self._fail_before_charge(fault)
        refusal = self._check_credentials(call.body)
        if refusal is not None:
            return refusal
        trxid = read_trxid(call.body)
        if trxid is not None and self._config.dedupe:
            first = self._ledger.first_charge(trxid)
            if first is not None:
                # A repeated trxid gets its first charge's response, uncharged.
                replay = ok_reply({"result": True, "message": first.message})
                return self._fail_after_charge(fault, replay)
        order = validate(call.body)
        if isinstance(order, Refusal):
            return refusal_reply(order.message)
        charge = self._build_charge(order, call, fault)
        if not self._ledger.add_charge(charge, call.now):
            return refusal_reply("Insufficient balance")
        charged = ok_reply({"result": True, "message": charge.message})

        return self._fail_after_charge(fault, charged, charge)

    def _build_charge(
        self, order: RechargeOrder | BillOrder, call: Call, fault: str | None
    ) -> Charge:
        cancel_draw = self._draws.draw("cancel", call.draw_key, str(call.attempt))
        lag = self._config.status_lag_seconds if fault == faults.STATUS_LAG else 0
        timing = ChargeTiming(
            outcome=CANCEL if cancel_draw < self._config.cancel_rate else SUCCESS,
            charged_at=call.now,
            settles_at=call.now + self._config.processing_seconds,
            visible_at=call.now + lag,
        )
        if isinstance(order, RechargeOrder):
            return _recharge_charge(order, timing)

        return _bill_charge(order, timing)

    def _fail_before_charge(self, fault: str | None) -> Reply:
        if fault == faults.REFUSE:
            return refusal_reply(
                "Transaction rejected by the provider (sandbox fault refuse)"
            )
        if fault == faults.RATE_LIMIT:
            retry_after = f"{self._config.retry_after:g}"
            body = {"result": False, "message": "Too many requests"}
            return Reply(json_response(429, body, (("Retry-After", retry_after),)))
        if fault == faults.DROP_BEFORE_CHARGE:
            return Reply(None)

        return error_reply(503, "Service temporarily unavailable")

    def _fail_after_charge(
        self, fault: str | None, reply: Reply, charge: Charge | None = None
    ) -> Reply:
        if fault == faults.ERROR_AFTER_CHARGE:
            unavailable = error_reply(503, "Service temporarily unavailable")
            return Reply(unavailable.response, charge=charge)
        if fault == faults.DROP_AFTER_CHARGE:
            return Reply(None, charge=charge)
        if fault == faults.SLOW_AFTER_CHARGE:
            return Reply(reply.response, self._config.slow_seconds, charge)

        return Reply(reply.response, charge=charge)

    def _status(self, call: Call) -> Reply:
        refusal = self._check_credentials(call.body)
        if refusal is not None:
            return refusal
        trxid = read_trxid(call.body)
        if trxid is None:
            return refusal_reply("Missing or invalid trxid")
        status = self._ledger.status(trxid, call.now)
        if status is None:
            return refusal_reply(NOT_FOUND_MESSAGE)

        return ok_reply({"result": True, "status": status})

    def _balance(self, call: Call) -> Reply:
        refusal = self._check_credentials(call.body)
        if refusal is not None:
            return refusal
        balance, drive_balance = self._ledger.balances(call.now)

        return ok_reply(
            {"result": True, "balance": balance, "driveBalance": drive_balance}
        )

    def _drives(self, call: Call) -> Reply:
        refusal = self._check_credentials(call.body)
        if refusal is not None:
            return refusal

        return ok_reply(select_drives(call.body))

    def _sandbox_test(self, call: Call) -> Reply:
        refusal = self._check_credentials(call.body)
        if refusal is not None:
            return refusal

        return ok_reply(mock_response(call.body))

    def _check_credentials(self, body: Body) -> Reply | None:
        key = body.get("successtopup_key")
        secret = body.get("successtopup_secret")
        if not _is_accepted(key, self._config.key):
            return refusal_reply("Invalid credentials")
        if not _is_accepted(secret, self._config.secret):
            return refusal_reply("Invalid credentials")

        return None


def _is_accepted(given: object, expected: str | None) -> bool:
    if not isinstance(given, str) or not given:
        return False
    if expected is None:
        return True

    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class ChargeTiming:
    """The drawn outcome of a new charge and its times in Unix seconds."""

    outcome: str
    charged_at: float
    settles_at: float
    visible_at: float


def _recharge_charge(order: RechargeOrder, timing: ChargeTiming) -> Charge:
    return Charge(
        trxid=order.trxid,
        kind="recharge",
        number=order.number,
        operator=order.operator,
        type=order.type,
        amount=str(order.amount),
        amount_poisha=taka_to_poisha(order.amount),
        package_id=order.offer.id if order.offer else None,
        bill_number=None,
        month=None,
        note="",
        purse=DRIVE_PURSE if order.is_drive else MAIN_PURSE,
        outcome=timing.outcome,
        message=RECHARGE_MESSAGE,
        charged_at=timing.charged_at,
        settles_at=timing.settles_at,
        visible_at=timing.visible_at,
    )


def _bill_charge(order: BillOrder, timing: ChargeTiming) -> Charge:
    return Charge(
        trxid=order.trxid,
        kind="bill",
        number=order.mobile_number,
        operator=order.bill_operator,
        type=None,
        amount=f"{order.amount:.2f}",
        amount_poisha=taka_to_poisha(order.amount),
        package_id=None,
        bill_number=order.bill_number,
        month=order.month,
        note=order.note,
        purse=MAIN_PURSE,
        outcome=timing.outcome,
        message=BILL_MESSAGE,
        charged_at=timing.charged_at,
        settles_at=timing.settles_at,
        visible_at=timing.visible_at,
    )


def _parse_object(raw: bytes) -> Body | None:
    if not raw:
        return None
    try:
        body = parse_json(raw)
    except ValueError:
        return None

    return body if isinstance(body, dict) else None
