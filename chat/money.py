"""Money as people read it: one format for every amount this service shows a person.

Costs here run from a hundred-millionth of a dollar (one token of a cheap model) to
thousands, so a fixed number of decimals is wrong at one end or the other: "$0.00" hides
a whole day of small turns, "$1234.56000000" buries the figure. Amounts of a dollar or
more get cents and thousands separators (`$1,234.56`); smaller ones keep three
significant digits, at least cents and at most the stored eight decimals (`$0.50`,
`$0.0123`, `$0.000176`). Machine-read outputs (the JSON API, CSV files, `--json`) keep
their full-precision strings and do not come through here.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

STORED_PLACES = 8  # costs are stored to a hundred-millionth of a dollar
SIGNIFICANT = 3


def usd(amount: Decimal | float | int | str) -> str:
    """`amount` dollars as a person reads it: `$12.35`, `$0.000176`, `$0.00`, `-$0.02`."""
    value = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1 or value == 0:
        return f"{sign}${value.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    # The first significant digit's place after the point: 0.000176 → 4.
    first = -value.adjusted()
    places = min(max(first + SIGNIFICANT - 1, 2), STORED_PLACES)
    rounded = value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    if rounded == 0:  # below a hundred-millionth: nothing was stored
        return "$0.00"
    text = f"{rounded:f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{sign}${whole}.{decimals.ljust(2, '0')}"
