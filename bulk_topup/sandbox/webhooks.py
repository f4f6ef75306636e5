"""Webhook pushes of status changes, with duplicates, reordering and forgeries.

For each charge the sandbox pushes ``Processing`` at once and the final status
when it settles, as the vendor's webhook does. The faults are drawn per charge:
a duplicate sends a push twice, a reorder delays ``Processing`` until after the
final status, and a forgery adds a ``Success`` push with a wrong token that
a receiver must reject. Each push is tried once; the vendor documents no
retries. Pushes go over plain HTTP to a loopback address only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bulk_topup.sandbox.faults import Draws
from bulk_topup.sandbox.jsonio import encode_json
from bulk_topup.sandbox.ledger import CANCEL, PROCESSING, SUCCESS, Charge

logger = logging.getLogger(__name__)

PUSH_TIMEOUT_SECONDS = 5.0
# A failing receiver would otherwise log one warning per push.
FAILURE_LOG_INTERVAL = 100
_COMMENTS = {
    ("recharge", PROCESSING): "Recharge is processing",
    ("recharge", SUCCESS): "Recharge successful",
    ("recharge", CANCEL): "Recharge cancelled; the amount was refunded",
    ("bill", PROCESSING): "Bill payment is processing",
    ("bill", SUCCESS): "Bill payment successful",
    ("bill", CANCEL): "Bill payment cancelled; the amount was refunded",
}


@dataclass(frozen=True)
class WebhookRates:
    """Shares of charges whose pushes are duplicated, reordered or forged."""

    duplicate: float = 0
    reorder: float = 0
    forge: float = 0


@dataclass(frozen=True)
class Push:
    """One webhook delivery: a status of a charge at a time, with its token."""

    charge: Charge
    status: str
    updated_at: float
    token: str

    def body(self) -> bytes:
        """Return the JSON body in the vendor's webhook format."""
        updated = datetime.fromtimestamp(self.updated_at, tz=UTC)
        return encode_json(
            {
                "status": self.status,
                "transactionId": self.charge.trxid,
                "comment": _COMMENTS[(self.charge.kind, self.status)],
                "note": self.charge.note,
                "updatedAt": updated.isoformat(timespec="milliseconds")[:-6] + "Z",
            }
        )


class WebhookSender:
    """Pushes every status change of the ledger's charges to one URL."""

    def __init__(self, url: str, token: str, draws: Draws, rates: WebhookRates) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._token = token
        self._draws = draws
        self._rates = rates
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0

    def push_charge(self, charge: Charge, now: float) -> None:
        """Start pushing a new charge: Processing now, the outcome at settling."""
        self._start(self._push_lifecycle(charge, now))

    def push_settlement(self, charge: Charge, now: float) -> None:
        """Start pushing only the outcome of a charge charged before a restart."""
        self._start(self._push_final(charge, now))

    async def close(self) -> None:
        """Cancel the pushes not yet sent and wait for them to end."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failures:
            logger.warning("%d webhook pushes failed in all", self._failures)

    def _start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push_lifecycle(self, charge: Charge, now: float) -> None:
        processing = Push(charge, PROCESSING, charge.charged_at, self._token)
        reordered = self._hits(self._rates.reorder, "reorder", charge)
        if not reordered:
            await self._send_maybe_twice(processing)
        await self._push_final(charge, now)
        if reordered:
            await self._send_maybe_twice(processing)

    async def _push_final(self, charge: Charge, now: float) -> None:
        await asyncio.sleep(max(0.0, charge.settles_at - now))
        final = Push(charge, charge.outcome, charge.settles_at, self._token)
        await self._send_maybe_twice(final)
        if self._hits(self._rates.forge, "forge", charge):
            forged_token = "forged-" + secrets.token_hex(8)
            await self._send(Push(charge, SUCCESS, charge.settles_at, forged_token))

    async def _send_maybe_twice(self, push: Push) -> None:
        await self._send(push)
        if self._hits(self._rates.duplicate, f"duplicate {push.status}", push.charge):
            await self._send(push)

    def _hits(self, rate: float, name: str, charge: Charge) -> bool:
        return rate > 0 and self._draws.draw("webhook", name, charge.trxid) < rate

    async def _send(self, push: Push) -> None:
        try:
            status = await asyncio.wait_for(self._post(push), PUSH_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, ValueError) as error:
            self._count_failure(push, repr(error))
            return
        if push.token == self._token and not 200 <= status < 300:
            self._count_failure(push, f"HTTP {status}")

    async def _post(self, push: Push) -> int:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            body = push.body()
            head = (
                f"POST {self._target} HTTP/1.1\r\n"
                f"Host: {self._host}:{self._port}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"x-webhook-token: {push.token}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()

        return _parse_status(status_line)

    def _count_failure(self, push: Push, cause: str) -> None:
        self._failures += 1
        if self._failures % FAILURE_LOG_INTERVAL == 1:
            logger.warning(
                "Webhook push of %s for trxid %s failed: %s (%d failures so far)",
                push.status,
                push.charge.trxid,
                cause,
                self._failures,
            )


def _parse_status(status_line: bytes) -> int:
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"invalid HTTP status line {status_line[:80]!r}")

    return int(parts[1])
