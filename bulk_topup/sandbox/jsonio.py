"""JSON for the sandbox, with exact numbers in both directions.

Request bodies are parsed with every fraction as ``Decimal`` so that no amount
passes through float. Responses may contain ``Decimal`` balances, which the
standard encoder rejects, so ``encode_json`` writes them as JSON numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal

CREDENTIAL_FIELDS = ("successtopup_key", "successtopup_secret")


class JsonDecimal(Decimal):
    """A JSON number with a fraction or exponent, and the text it was sent as."""

    literal: str


def _parse_decimal(text: str) -> JsonDecimal:
    number = JsonDecimal(text)
    number.literal = text
    return number


def parse_json(raw: bytes) -> object:
    """Parse a request body; raise ValueError when it is not JSON in UTF-8."""
    return json.loads(raw.decode("utf-8"), parse_float=_parse_decimal)


def encode_json(value: object) -> bytes:
    """Encode a response body as compact UTF-8 JSON, ``Decimal`` as a number."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except TypeError:
        text = _encode(value, sort_keys=False)

    return text.encode()


def body_sha256(body: Mapping[str, object]) -> str:
    """Return the sha256 hex of a body's canonical JSON without credentials.

    The canonical form is ``json.dumps(body, sort_keys=True, separators=(",",
    ":"), ensure_ascii=False)``, which a client can compute on the body it
    sends. A number with a fraction keeps the text it arrived as.
    """
    visible = {
        name: value for name, value in body.items() if name not in CREDENTIAL_FIELDS
    }
    try:
        text = json.dumps(
            visible, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except TypeError:
        text = _encode(visible, sort_keys=True)

    return hashlib.sha256(text.encode()).hexdigest()


def format_decimal(number: Decimal) -> str:
    """Return a JSON number for a Decimal: integral as ``12``, else ``12.50``."""
    if isinstance(number, JsonDecimal):
        return number.literal
    if number == number.to_integral_value():
        return str(int(number))

    return format(number, "f")


def _encode(value: object, *, sort_keys: bool) -> str:
    # Mirrors json.dumps(..., separators=(",", ":"), ensure_ascii=False) for
    # the types JSON bodies contain, plus Decimal.
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, Mapping):
        items = sorted(value.items()) if sort_keys else list(value.items())
        members = [
            f"{json.dumps(str(key), ensure_ascii=False)}:"
            f"{_encode(item, sort_keys=sort_keys)}"
            for key, item in items
        ]
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        elements = [_encode(item, sort_keys=sort_keys) for item in value]
        return "[" + ",".join(elements) + "]"
    if isinstance(value, float):
        raise TypeError("the sandbox never encodes a float: use int or Decimal")

    return json.dumps(value, ensure_ascii=False)
