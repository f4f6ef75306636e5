"""Injected faults and the seeded draws that pick them.

Each recharge or bill request gets one draw in [0, 1). The configured faults
take disjoint shares of that interval in the order given, so ``refuse=0.1`` and
``429=0.2`` hit [0, 0.1) and [0.1, 0.3). With a seed, a draw is a hash of the
seed, the trxid and how many earlier requests carried that trxid, so the same
requests meet the same faults whatever order concurrent clients send them in.
"""

from __future__ import annotations

import hashlib
import random
from decimal import Decimal

REFUSE = "refuse"
ERROR_BEFORE_CHARGE = "5xx-before-charge"
ERROR_AFTER_CHARGE = "5xx-after-charge"
DROP_BEFORE_CHARGE = "drop-before-charge"
DROP_AFTER_CHARGE = "drop-after-charge"
SLOW_AFTER_CHARGE = "slow-after-charge"
RATE_LIMIT = "429"
STATUS_LAG = "status-lag"

FAULT_NAMES: tuple[str, ...] = (
    REFUSE,
    ERROR_BEFORE_CHARGE,
    ERROR_AFTER_CHARGE,
    DROP_BEFORE_CHARGE,
    DROP_AFTER_CHARGE,
    SLOW_AFTER_CHARGE,
    RATE_LIMIT,
    STATUS_LAG,
)
# Faults that strike before the ledger is touched: the request charges nothing.
BEFORE_CHARGE_FAULTS = frozenset(
    {REFUSE, ERROR_BEFORE_CHARGE, DROP_BEFORE_CHARGE, RATE_LIMIT}
)


def parse_fault(text: str) -> tuple[str, float]:
    """Parse ``NAME=RATE`` into a fault name and its share of requests.

    Raises ValueError for a missing ``=``, an unknown name or a rate that is
    not a number from 0 to 1.
    """
    name, separator, rate_text = text.partition("=")
    name = name.strip()
    if not separator:
        raise ValueError(
            f"Invalid fault {text!r}: write NAME=RATE, for example "
            "drop-after-charge=0.01."
        )
    if name not in FAULT_NAMES:
        raise ValueError(
            f"Unknown fault {name!r}: use one of {', '.join(FAULT_NAMES)}."
        )
    try:
        rate = float(rate_text)
    except ValueError:
        raise ValueError(
            f"Invalid rate {rate_text!r} for fault {name}: use a number from 0 to 1."
        ) from None
    if not 0 <= rate <= 1:
        raise ValueError(
            f"Invalid rate {rate_text!r} for fault {name}: use a number from 0 to 1."
        )

    return name, rate


def pick_fault(faults: tuple[tuple[str, float], ...], draw: float) -> str | None:
    """Return the fault whose share of [0, 1) contains draw, or None."""
    # Comparing decimal forms, as the rates are written, keeps the share of
    # 0.1 + 0.2 from ending above 0.3 as it would in binary floating point.
    draw_decimal = Decimal(repr(draw))
    start = Decimal(0)
    for name, rate in faults:
        end = start + Decimal(str(rate))
        if start <= draw_decimal < end:
            return name
        start = end

    return None


class Draws:
    """Uniform draws in [0, 1): derived from a seed, or random without one."""

    def __init__(self, seed: int | None) -> None:
        self._seed = seed
        self._random = random.Random()

    def draw(self, *parts: str) -> float:
        """Return the draw for parts, always the same for one seed and parts."""
        if self._seed is None:
            return self._random.random()
        text = "\x1f".join((str(self._seed), *parts))
        digest = hashlib.sha256(text.encode()).digest()

        return int.from_bytes(digest[:8], "big") / 2**64
