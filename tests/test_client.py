"""The API client: answers, refusals and every httpx error converted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bulk_topup.client import (
    Credentials,
    TopupClient,
    convert_transport_error,
    hash_body,
)
from bulk_topup.errors import (
    AmbiguousOutcome,
    BalanceRefused,
    CredentialsRefused,
    NotSent,
    RateLimited,
    Refused,
)

CREDENTIALS = Credentials("key-1", "secret-xyz")
FIELDS = {
    "number": "01711000001",
    "type": "prepaid",
    "operator": "GP",
    "amount": 50,
    "trxid": "BKTEST",
}


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> TopupClient:
    return TopupClient(
        "http://127.0.0.1:9", CREDENTIALS, transport=httpx.MockTransport(handler)
    )


def recharge_with(handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    async def call() -> Any:
        client = client_for(handler)
        try:
            return await client.recharge(FIELDS)
        finally:
            await client.aclose()

    return asyncio.run(call())


def answer(status: int, body: Any, **headers: str) -> Callable[..., httpx.Response]:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def test_recharge_sends_credentials_in_body() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"result": True, "message": "ok"})

    recharge_with(handler)
    assert seen[0]["successtopup_key"] == "key-1"
    assert seen[0]["successtopup_secret"] == "secret-xyz"
    assert seen[0]["trxid"] == "BKTEST"


REFUSALS = [
    ("Insufficient balance", BalanceRefused),
    ("Invalid credentials", CredentialsRefused),
    ("Invalid mobile number", Refused),
]


@pytest.mark.parametrize(
    ("message", "error"), REFUSALS, ids=["balance", "credentials", "row"]
)
def test_refusal_is_classified(message: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        recharge_with(answer(200, {"result": False, "message": message}))
    assert type(caught.value) is error


def test_duplicate_refusal_has_its_code() -> None:
    with pytest.raises(Refused) as caught:
        recharge_with(answer(200, {"result": False, "message": "Duplicate trxid"}))
    assert caught.value.code == "duplicate_trxid"


@pytest.mark.parametrize("status", [500, 502, 503, 400, 401])
def test_non_200_answer_is_ambiguous(status: int) -> None:
    with pytest.raises(AmbiguousOutcome):
        recharge_with(answer(status, {"result": False, "message": "x"}))


def test_unreadable_answer_is_ambiguous() -> None:
    with pytest.raises(AmbiguousOutcome, match="not a JSON object"):
        recharge_with(lambda request: httpx.Response(200, text="<html>oops"))


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(RateLimited) as caught:
        recharge_with(answer(429, {}, **{"Retry-After": "2.5"}))
    assert caught.value.retry_after == 2.5


def test_connection_refused_is_not_sent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(NotSent):
        recharge_with(handler)


def test_read_timeout_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(AmbiguousOutcome):
        recharge_with(handler)


def all_subclasses(base: type[Exception]) -> set[type[Exception]]:
    found = set()
    for sub in base.__subclasses__():
        found.add(sub)
        found |= all_subclasses(sub)
    return found


def test_every_httpx_error_has_conversion() -> None:
    from bulk_topup.client import _CONVERSIONS

    explicit = {httpx_class for httpx_class, _ in _CONVERSIONS}
    httpx_errors = {
        error
        for error in all_subclasses(httpx.HTTPError)
        if error.__module__.startswith("httpx")
    }
    missing = sorted(e.__name__ for e in httpx_errors - explicit)
    assert missing == []


def test_only_connect_failures_are_not_sent() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/api/recharge")
    not_sent = {
        name
        for name in dir(httpx)
        if isinstance(getattr(httpx, name), type)
        and issubclass(getattr(httpx, name), httpx.TransportError)
        and isinstance(
            convert_transport_error(getattr(httpx, name)("x", request=request)),
            NotSent,
        )
    }
    assert not_sent == {
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "ProxyError",
        "UnsupportedProtocol",
    }


def test_body_hash_ignores_credentials() -> None:
    with_credentials = {**FIELDS, **CREDENTIALS.as_body()}
    assert hash_body(with_credentials) == hash_body(FIELDS)


def test_credentials_hidden_from_repr() -> None:
    assert "secret-xyz" not in repr(CREDENTIALS)
