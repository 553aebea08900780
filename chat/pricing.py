"""Cost of a turn from the price list. Computed once, when the turn finishes, and stored."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

from chat.models import ModelPrice
from chat.provider import Usage

_DATED_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_MILLION = Decimal(1_000_000)


def price_names(model: str) -> list[str]:
    """Names a model is priced under: itself, then its base name for a dated snapshot
    (`gpt-4.1-mini-2025-04-14` → `gpt-4.1-mini`)."""
    base = _DATED_SNAPSHOT.sub("", model)
    return [model] if base == model else [model, base]


def price_for(model: str, at: datetime) -> ModelPrice | None:
    """The price in force at `at`; an exact model name beats its snapshot's base name."""
    prices = ModelPrice.objects.filter(model__in=price_names(model), valid_from__lte=at)
    by_name = {}
    for price in prices.order_by("valid_from"):
        by_name[price.model] = price
    return next((by_name[name] for name in price_names(model) if name in by_name), None)


def cost_of(usage: Usage, price: ModelPrice) -> Decimal:
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_price = price.cached_input_per_million
    if cached_price is None:
        cached_price = price.input_per_million
    total = (
        (usage.input_tokens - cached) * price.input_per_million
        + cached * cached_price
        + usage.output_tokens * price.output_per_million
    )
    return (total / _MILLION).quantize(Decimal("0.00000001"))
