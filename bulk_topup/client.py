"""The Success TopUp API over httpx, and the one place where httpx errors end.

Every call is a JSON ``POST`` with the credentials in the body. The client
turns each answer into a value or one of the ``errors.ApiError`` classes:
``NotSent`` only when the request surely never reached the API, so that the
caller may repeat it; ``AmbiguousOutcome`` whenever it may have been charged.

Credentials live only in the request body sent over the wire: they are never
logged, hashed or stored, and ``Credentials`` hides them from ``repr``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from . import crashpoints
from .errors import (
    AmbiguousOutcome,
    ApiError,
    BalanceRefused,
    CredentialsRefused,
    NotSent,
    RateLimited,
    Refused,
)

logger = logging.getLogger(__name__)

CONNECTIONS_PER_CLIENT = 8

# httpx's transport errors, most specific first. A request that failed while
# connecting, or while waiting for a pooled connection, never left the process;
# every later failure may have reached the API.
_CONVERSIONS: tuple[tuple[type[Exception], type[ApiError]], ...] = (
    (httpx.ConnectTimeout, NotSent),
    (httpx.PoolTimeout, NotSent),
    (httpx.ConnectError, NotSent),
    (httpx.UnsupportedProtocol, NotSent),
    (httpx.ProxyError, NotSent),
    (httpx.ReadTimeout, AmbiguousOutcome),
    (httpx.WriteTimeout, AmbiguousOutcome),
    (httpx.ReadError, AmbiguousOutcome),
    (httpx.WriteError, AmbiguousOutcome),
    (httpx.CloseError, AmbiguousOutcome),
    (httpx.RemoteProtocolError, AmbiguousOutcome),
    (httpx.LocalProtocolError, AmbiguousOutcome),
    (httpx.TimeoutException, AmbiguousOutcome),
    (httpx.NetworkError, AmbiguousOutcome),
    (httpx.ProtocolError, AmbiguousOutcome),
    (httpx.TransportError, AmbiguousOutcome),
    (httpx.DecodingError, AmbiguousOutcome),
    (httpx.TooManyRedirects, AmbiguousOutcome),
    (httpx.RequestError, AmbiguousOutcome),
    (httpx.HTTPStatusError, AmbiguousOutcome),
    (httpx.HTTPError, AmbiguousOutcome),
)


@dataclass(frozen=True)
class Credentials:
    """The account's key and secret; ``repr`` never shows them."""

    key: str = field(repr=False)
    secret: str = field(repr=False)

    def as_body(self) -> dict[str, str]:
        """Return the two body fields that carry the credentials."""
        return {"successtopup_key": self.key, "successtopup_secret": self.secret}


@dataclass(frozen=True)
class Endpoints:
    """The API's paths; offers, balance and bill payment are undocumented."""

    recharge: str = "/api/recharge"
    status: str = "/api/status"
    drives: str = "/api/drives"
    balance: str = "/api/balance"
    bill_pay: str = "/api/bill-pay"


@dataclass(frozen=True)
class RefusalPatterns:
    """Patterns that classify a refusal's free-text message, case-insensitive."""

    balance: str = r"insufficient|not enough balance|low balance"
    credentials: str = r"credential|unauthori[sz]ed|authenticat|invalid (api )?key"
    duplicate: str = r"duplicate|already (exists|used|processed|submitted)"

    def classify(self, message: str) -> str:
        """Return balance, credentials, duplicate_trxid or row for a message."""
        for kind in ("credentials", "balance", "duplicate"):
            if re.search(getattr(self, kind), message, re.IGNORECASE):
                return "duplicate_trxid" if kind == "duplicate" else kind
        return "row"


@dataclass(frozen=True)
class Timeouts:
    """Per-request time limits in seconds."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 10.0
    pool: float = 10.0

    @property
    def request(self) -> float:
        """Return the longest time a request can take once it has a connection."""
        return self.connect + self.write + self.read


@dataclass(frozen=True)
class Answer:
    """A parsed response: HTTP status, the JSON object, the API's message."""

    http_status: int
    data: Mapping[str, Any]
    elapsed: float

    @property
    def message(self) -> str:
        """Return the API's message, or an empty string."""
        return str(self.data.get("message", ""))


@dataclass(frozen=True)
class StatusAnswer:
    """The status ``/api/status`` returned for a trxid; None when unseen."""

    status: str | None
    message: str
    http_status: int


@dataclass(frozen=True)
class Balance:
    """The account's main and drive balances, in Taka."""

    balance: Decimal
    drive_balance: Decimal


def canonical_json(body: Mapping[str, Any]) -> str:
    """Return the body as canonical JSON, the form that is hashed."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_body(body: Mapping[str, Any]) -> str:
    """Return the SHA-256 of a request body without its credentials."""
    public = {
        name: value
        for name, value in body.items()
        if name not in ("successtopup_key", "successtopup_secret")
    }
    return hashlib.sha256(canonical_json(public).encode()).hexdigest()


def convert_transport_error(error: Exception) -> ApiError:
    """Return the bulk-topup error for an httpx exception."""
    for httpx_class, our_class in _CONVERSIONS:
        if isinstance(error, httpx_class):
            name = type(error).__name__
            text = str(error) or "no detail"
            return our_class(f"{name}: {text}")
    return AmbiguousOutcome(f"{type(error).__name__}: {error}")


class TopupClient:
    """Calls the Success TopUp API; spreads requests over a few httpx clients."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        concurrency: int = 8,
        timeouts: Timeouts | None = None,
        endpoints: Endpoints | None = None,
        patterns: RefusalPatterns | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.timeouts = timeouts or Timeouts()
        self.endpoints = endpoints or Endpoints()
        self.patterns = patterns or RefusalPatterns()
        timeout = httpx.Timeout(
            connect=self.timeouts.connect,
            read=self.timeouts.read,
            write=self.timeouts.write,
            pool=self.timeouts.pool,
        )
        # One httpx client serves far fewer requests a second than several
        # small ones, because its pool re-checks every waiting request.
        count = max(1, math.ceil(concurrency / CONNECTIONS_PER_CLIENT))
        limits = httpx.Limits(
            max_connections=CONNECTIONS_PER_CLIENT,
            max_keepalive_connections=CONNECTIONS_PER_CLIENT,
        )
        self._clients = [
            httpx.AsyncClient(
                base_url=self.base_url,
                timeout=timeout,
                limits=limits,
                transport=transport,
                trust_env=False,
            )
            for _ in range(count)
        ]
        self._next_client = itertools.cycle(self._clients)

    async def aclose(self) -> None:
        """Close every connection."""
        for client in self._clients:
            await client.aclose()

    async def post(self, path: str, fields: Mapping[str, Any]) -> Answer:
        """Send one call and parse its JSON response, converting every failure."""
        body = {**self.credentials.as_body(), **fields}
        started = time.monotonic()
        extensions = {}
        if crashpoints.is_armed("after_request_written"):
            extensions["trace"] = _crash_after_request_body
        try:
            response = await next(self._next_client).post(
                path, json=body, extensions=extensions
            )
        except httpx.HTTPError as error:
            logger.debug("%s %s failed: %s", path, fields.get("trxid", ""), error)
            raise convert_transport_error(error) from error
        elapsed = time.monotonic() - started
        logger.debug(
            "%s %s -> HTTP %s in %.0f ms",
            path,
            fields.get("trxid", ""),
            response.status_code,
            elapsed * 1000,
        )
        return _parse_answer(response, elapsed)

    async def recharge(self, fields: Mapping[str, Any]) -> Answer:
        """Send a recharge; return the accepting answer or raise its error."""
        answer = await self.post(self.endpoints.recharge, fields)
        return self._accepting(answer)

    async def bill_pay(self, fields: Mapping[str, Any]) -> Answer:
        """Send a bill payment; return the accepting answer or raise its error."""
        answer = await self.post(self.endpoints.bill_pay, fields)
        return self._accepting(answer)

    def _accepting(self, answer: Answer) -> Answer:
        if answer.http_status != 200:
            raise AmbiguousOutcome(
                f"HTTP {answer.http_status}: {answer.message or 'no message'}",
                http_status=answer.http_status,
            )
        if answer.data.get("result") is True:
            return answer
        raise self._refusal(answer)

    def _refusal(self, answer: Answer) -> Refused:
        message = answer.message or "refused without a message"
        kind = self.patterns.classify(message)
        if kind == "balance":
            return BalanceRefused(message, http_status=200)
        if kind == "credentials":
            return CredentialsRefused(message, http_status=200)
        return Refused(message, http_status=200, code=kind)

    async def status(self, trxid: str) -> StatusAnswer:
        """Return the provider's status of a trxid."""
        answer = await self.post(self.endpoints.status, {"trxid": trxid})
        if answer.http_status != 200:
            raise AmbiguousOutcome(
                f"status of {trxid}: HTTP {answer.http_status}",
                http_status=answer.http_status,
            )
        if answer.data.get("result") is True:
            status = answer.data.get("status")
            if status not in ("Success", "Processing", "Cancel"):
                raise AmbiguousOutcome(f"status of {trxid}: unexpected {status!r}")
            return StatusAnswer(str(status), answer.message, 200)
        kind = self.patterns.classify(answer.message)
        if kind == "credentials":
            raise CredentialsRefused(answer.message, http_status=200)
        # NOTE: the vendor does not document the answer for a trxid it never
        # saw; any refusal of a status query is taken to mean "not seen".
        return StatusAnswer(None, answer.message, 200)

    async def balance(self) -> Balance:
        """Return the account's balances."""
        answer = await self.post(self.endpoints.balance, {})
        if answer.http_status != 200 or answer.data.get("result") is not True:
            if self.patterns.classify(answer.message) == "credentials":
                raise CredentialsRefused(answer.message, http_status=200)
            raise AmbiguousOutcome(
                f"balance: HTTP {answer.http_status} {answer.message}".strip(),
                http_status=answer.http_status,
            )
        return Balance(
            _to_decimal(answer.data.get("balance")),
            _to_decimal(answer.data.get("driveBalance")),
        )

    async def offers(
        self, operator: str | None = None, offer_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the offers (drives and bundles) the API lists."""
        fields = {
            name: value
            for name, value in (("operator", operator), ("type", offer_type))
            if value
        }
        answer = await self.post(self.endpoints.drives, fields)
        if answer.http_status != 200 or answer.data.get("result") is not True:
            raise AmbiguousOutcome(f"offers: {answer.message or answer.http_status}")
        drives = answer.data.get("drives", [])
        return [dict(item) for item in drives if isinstance(item, dict)]


async def _crash_after_request_body(event: str, info: Mapping[str, Any]) -> None:
    if event == "http11.send_request_body.complete":
        crashpoints.crash_point("after_request_written")


def _parse_answer(response: httpx.Response, elapsed: float) -> Answer:
    if response.status_code == 429:
        raise RateLimited(
            "HTTP 429 Too Many Requests",
            retry_after=_retry_after(response.headers.get("retry-after")),
        )
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise AmbiguousOutcome(
            f"HTTP {response.status_code} with a response that is not a JSON object",
            http_status=response.status_code,
        )
    return Answer(response.status_code, data, elapsed)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _to_decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise AmbiguousOutcome(f"balance: unreadable amount {value!r}") from None
