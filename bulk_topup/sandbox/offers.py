"""The sandbox's fixed offer list: regular packs and drive packs per operator.

A drive pack is paid from the drive balance, every other recharge from the
main balance. Prices are whole Taka. The real list changes often, so these
offers only need to be plausible and stable for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

REGULAR = "regular"
DRIVE = "drive"
OFFER_OPERATORS = ("GP", "RB", "AT", "TT", "BL")


@dataclass(frozen=True)
class Offer:
    """A package that a recharge can buy by its ``package_id``."""

    id: str
    operator: str
    type: str
    title: str
    price: int
    validity_days: int

    def to_json(self) -> dict[str, object]:
        """Return the offer as ``/api/drives`` lists it."""
        return {
            "id": self.id,
            "operator": self.operator,
            "type": self.type,
            "title": self.title,
            "price": self.price,
            "validity": f"{self.validity_days} days",
        }


def _offers_for(operator: str) -> list[Offer]:
    # The same four shapes for every operator keep the list short and the
    # ids guessable in tests: GP-R-48 is Grameenphone's regular 48 Taka pack.
    shapes = [
        (REGULAR, "1 GB internet", 48, 3),
        (REGULAR, "100 minutes talk time", 99, 7),
        (DRIVE, "5 GB internet", 149, 7),
        (DRIVE, "30 GB internet", 499, 30),
    ]
    offers = []
    for offer_type, title, price, days in shapes:
        letter = "R" if offer_type == REGULAR else "D"
        offers.append(
            Offer(
                id=f"{operator}-{letter}-{price}",
                operator=operator,
                type=offer_type,
                title=title,
                price=price,
                validity_days=days,
            )
        )

    return offers


OFFERS: tuple[Offer, ...] = tuple(
    offer for operator in OFFER_OPERATORS for offer in _offers_for(operator)
)
_OFFERS_BY_ID = {offer.id: offer for offer in OFFERS}


def find_offer(package_id: str) -> Offer | None:
    """Return the offer with this id, or None."""
    return _OFFERS_BY_ID.get(package_id)


def select_offers(operator: str | None, offer_type: str | None) -> list[Offer]:
    """Return the offers of one operator and type; None selects all."""
    return [
        offer
        for offer in OFFERS
        if operator in (None, offer.operator) and offer_type in (None, offer.type)
    ]
