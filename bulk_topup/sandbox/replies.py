"""The call and reply types of the sandbox's handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bulk_topup.sandbox.ledger import Charge
from bulk_topup.sandbox.server import Response, json_response

Body = Mapping[str, object]


@dataclass(frozen=True)
class Call:
    """A request passed to a handler: its JSON object body and its time.

    ``draw_key`` identifies the attempts at one recharge or bill (by path and
    trxid) and ``attempt`` counts them from 0, so fault and outcome draws are
    the same whatever order concurrent requests arrive in.
    """

    body: Body
    now: float
    draw_key: str = ""
    attempt: int = 0


@dataclass(frozen=True)
class Reply:
    """A handler's result: the response, a delay in seconds before it, and the
    charge made, if any. A ``response`` of None drops the connection."""

    response: Response | None
    delay: float = 0
    charge: Charge | None = None


def ok_reply(value: Mapping[str, object]) -> Reply:
    """Return an HTTP 200 reply with a JSON body."""
    return Reply(json_response(200, value))


def refusal_reply(message: str) -> Reply:
    """Return the API's refusal: HTTP 200 with ``result: false``."""
    return ok_reply({"result": False, "message": message})


def error_reply(status: int, message: str) -> Reply:
    """Return an HTTP error reply for a request the sandbox cannot handle."""
    return Reply(json_response(status, {"result": False, "message": message}))
