"""`chat.money.usd`: one format for every amount shown to a person."""

from decimal import Decimal

import pytest

from chat.money import usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("0"), "$0.00"),
        (Decimal("0E-8"), "$0.00"),
        # Small amounts keep three significant digits, never fewer than cents…
        (Decimal("0.000176"), "$0.000176"),
        (Decimal("0.00017634"), "$0.000176"),
        (Decimal("0.00014000"), "$0.00014"),
        (Decimal("0.0123"), "$0.0123"),
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.995"), "$0.995"),
        # …and never more than the eight decimals a cost is stored with.
        (Decimal("0.00000001"), "$0.00000001"),
        (Decimal("0.000000004"), "$0.00"),
        # A dollar or more reads as cents, with thousands separated.
        (Decimal("0.9999"), "$1.00"),
        (Decimal("12.345"), "$12.35"),
        (Decimal("1234.5"), "$1,234.50"),
        (3, "$3.00"),
        ("0.00014000", "$0.00014"),
        # A recomputed difference can be negative.
        (Decimal("-0.0234"), "-$0.0234"),
        (Decimal("-12.5"), "-$12.50"),
        # SQLite sums decimals as floats: the noise is rounded away.
        (0.1 + 0.2, "$0.30"),
        (0.000176 * 3, "$0.000528"),
    ],
)
def test_usd(amount, shown):
    assert usd(amount) == shown
