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
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from chat.llm import Usage
from chat.models import Message, ModelPrice, ToolPrice
from chat.spend.ledger import MESSAGE_VALUES, ledger_move_cost

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
_prices: tuple[float, list[ModelPrice], list[ToolPrice]] | None = None


def _loaded() -> tuple[float, list[ModelPrice], list[ToolPrice]]:
    global _prices
    loaded = _prices
    if loaded is None or time.monotonic() - loaded[0] > PRICES_TTL_SECONDS:
        loaded = (time.monotonic(), list(ModelPrice.objects.all()), list(ToolPrice.objects.all()))
        _prices = loaded
    return loaded


def prices_current() -> list[ModelPrice]:
    return _loaded()[1]


def tool_prices_current() -> list[ToolPrice]:
    """The tools' price list, kept with the models' (same copy, same TTL)."""
    return _loaded()[2]


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


WEB_SEARCH = "web_search"


def tool_price_in(prices: Iterable[ToolPrice], *, tool: str, at: datetime) -> Decimal | None:
    """A tool's price per 1,000 calls in force at `at`, from a loaded price list; hosted
    web search falls back to `CHAT_WEB_SEARCH_USD_PER_1000`, any other tool is free."""
    in_force = [price for price in prices if price.tool == tool and price.valid_from <= at]
    if in_force:
        return max(in_force, key=lambda price: price.valid_from).per_thousand_calls
    return settings.CHAT_WEB_SEARCH_USD_PER_1000 if tool == WEB_SEARCH else None


def tool_price_now(tool: str, at: datetime) -> Decimal | None:
    """`tool_price_in` from the cached price list (the turn-finishing path)."""
    return tool_price_in(tool_prices_current(), tool=tool, at=at)


def calls_cost(per_thousand: Decimal, calls: int) -> Decimal:
    return (per_thousand * calls / 1000).quantize(Decimal("0.00000001"))


def search_cost(searches: int, at: datetime) -> Decimal:
    """Hosted web searches are billed per call (the `web_search` tool price)."""
    return calls_cost(tool_price_now(WEB_SEARCH, at) or Decimal(0), searches)


def rounds_tool_cost(rounds: Iterable[dict[str, Any]] | None) -> Decimal:
    """What a reply's tool calls cost, as stored on its rounds (`chat_recost` keeps it)."""
    return sum(
        (
            Decimal(call["cost"])
            for r in rounds or ()
            for call in r.get("tool_calls") or ()
            if call.get("cost")
        ),
        Decimal(0),
    )


def web_searches_of(rounds: list[dict[str, Any]] | None, provider: str) -> int:
    """The billed web searches of a reply's model calls (the demo's are pretend)."""
    if provider == "demo":
        return 0
    return sum(int(r.get("web_searches") or 0) for r in rounds or ())


def messages_recost(*, messages: QuerySet[Message], dry_run: bool = False) -> Recost:
    """Recompute the cost of chosen assistant messages from the current price list, with
    the price that was in force when each one finished; the usage ledger moves by the
    difference, in the same transaction as each batch of rows."""
    prices = list(ModelPrice.objects.all())
    tool_prices = list(ToolPrice.objects.all())
    changed: list[tuple[dict[str, Any], Decimal]] = []
    unchanged = skipped = 0
    rows = messages.filter(role=Message.Role.ASSISTANT).values(*MESSAGE_VALUES, "rounds")
    for row in rows.iterator(chunk_size=2000):
        at = row["finished_at"] or row["created_at"]
        price = price_in(prices, model=row["model"], at=at)
        if price is None or row["input_tokens"] is None or row["output_tokens"] is None:
            skipped += 1
            continue
        usage = Usage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cached_tokens=row["cached_tokens"] or 0,
        )
        cost = cost_of(usage, price)
        if searches := web_searches_of(row["rounds"], row["provider"]):
            per_thousand = tool_price_in(tool_prices, tool=WEB_SEARCH, at=at)
            cost += calls_cost(per_thousand or Decimal(0), searches)
        # Tool calls keep the price stored when their turn finished (on its rounds).
        cost += rounds_tool_cost(row["rounds"])
        if cost == row["cost"]:
            unchanged += 1
            continue
        changed.append((row, cost))
    if not dry_run:
        for start in range(0, len(changed), 500):
            _write_costs(changed[start : start + 500])
    return Recost(changed=len(changed), unchanged=unchanged, skipped=skipped)


def _write_costs(batch: list[tuple[dict[str, Any], Decimal]]) -> None:
    new_costs = {row["pk"]: cost for row, cost in batch}
    with transaction.atomic():
        # The rows as they are now (locked), so the ledger moves from what is stored.
        current = list(
            Message.objects.select_for_update(of=("self",))
            .filter(pk__in=new_costs)
            .values(*MESSAGE_VALUES)
        )
        Message.objects.bulk_update(
            [Message(pk=pk, cost=cost) for pk, cost in new_costs.items()], ["cost"]
        )
        ledger_move_cost((row, new_costs[row["pk"]]) for row in current)
