"""Cost of a turn from the price list. Computed once, when the turn finishes, and stored.

A later price edit never rewrites stored costs; `messages_recost` does, on purpose, for
rows a staff member chose (admin action or `manage.py chat_recost`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet

from chat.llm import Usage
from chat.models import Message, ModelPrice

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
    return price_in(prices, model=model, at=at)


# Finishing a turn reads the price list from this process's copy instead of querying it:
# a query per finished turn is a cost every reply would pay. An edit made in this
# process's admin is seen at once (it calls `prices_forget`); other workers and other
# processes (a shell, a command) see it within the TTL.
# The cost is still the price in force when the turn finishes: the whole list is kept,
# with its `valid_from` dates.
PRICES_TTL_SECONDS = 60.0
_prices: tuple[float, list[ModelPrice]] | None = None


def prices_current() -> list[ModelPrice]:
    global _prices
    loaded = _prices
    if loaded is None or time.monotonic() - loaded[0] > PRICES_TTL_SECONDS:
        loaded = (time.monotonic(), list(ModelPrice.objects.all()))
        _prices = loaded
    return loaded[1]


def prices_forget() -> None:
    """Drop this process's copy of the price list (after an edit, or a test's flush)."""
    global _prices
    _prices = None


def price_now(model: str, at: datetime) -> ModelPrice | None:
    """`price_for` from the cached price list (the turn-finishing path)."""
    return price_in(prices_current(), model=model, at=at)


def price_in(prices: Iterable[ModelPrice], *, model: str, at: datetime) -> ModelPrice | None:
    """`price_for` over an already loaded price list (one query for many messages)."""
    names = price_names(model)
    latest: dict[str, ModelPrice] = {}
    for price in prices:
        if price.model not in names or price.valid_from > at:
            continue
        if price.model not in latest or price.valid_from > latest[price.model].valid_from:
            latest[price.model] = price
    return next((latest[name] for name in names if name in latest), None)


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


@dataclass(frozen=True, slots=True)
class Recost:
    changed: int
    unchanged: int
    skipped: int  # no stored usage, or no price for the model at that time


def messages_recost(*, messages: QuerySet[Message], dry_run: bool = False) -> Recost:
    """Recompute the cost of chosen assistant messages from the current price list, with
    the price that was in force when each one finished."""
    prices = list(ModelPrice.objects.all())
    changed: list[Message] = []
    unchanged = skipped = 0
    rows = (
        messages.filter(role=Message.Role.ASSISTANT)
        .select_related(None)
        .only(
            "pk",
            "model",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "cost",
            "finished_at",
            "created_at",
        )
    )
    for message in rows.iterator(chunk_size=2000):
        price = price_in(prices, model=message.model, at=message.finished_at or message.created_at)
        if price is None or message.input_tokens is None or message.output_tokens is None:
            skipped += 1
            continue
        usage = Usage(
            input_tokens=message.input_tokens,
            output_tokens=message.output_tokens,
            cached_tokens=message.cached_tokens or 0,
        )
        cost = cost_of(usage, price)
        if cost == message.cost:
            unchanged += 1
            continue
        message.cost = cost
        changed.append(message)
    if not dry_run:
        Message.objects.bulk_update(changed, ["cost"], batch_size=500)
    return Recost(changed=len(changed), unchanged=unchanged, skipped=skipped)
