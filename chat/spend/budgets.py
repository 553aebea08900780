"""Spending budgets in money: each person's limit per day, week or month, and their spend.

A person's limit is `CHAT_BUDGET_USD` unless an admin gave them their own (`Budget`: an
amount, or no limit at all). Spend is the stored cost of the person's turns that finished
in the current period (`CHAT_BUDGET_PERIOD`, in `TIME_ZONE`), whatever their status: a
cancelled or failed turn that used tokens was billed too.

A new turn is refused while spend has reached the limit, and so is the first opening of
a deferred turn (it is only then that the model is called). Turns already running when it
is reached still finish, so the overshoot is at most those turns. Workers agree on the
numbers because the database decides: spend is summed from the stored costs. With a
shared cache (Redis) the sum is kept there between turns, and dropped whenever one of
the person's turns is recorded, so every worker reads it afresh; an in-process cache
cannot be dropped for the other workers, so there each check reads the database.
Anonymous visitors have no account and no budget (the rate limit and token quota still
apply to them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypedDict

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Q, Sum
from django.utils import timezone

from chat.errors import LimitExceeded
from chat.models import Budget, Message
from chat.spend.counters import cache_is_shared, run_cache_ops
from chat.spend.periods import Period, budget_period

# A cached limit is re-read this often, so an admin's change reaches every worker.
LIMIT_CACHE_SECONDS = 60
# A cached sum is read again from the database at least this often: a turn recorded
# outside the web path (`manage.py chat`) does not drop it, and counts within that time.
SPEND_CACHE_SECONDS = 60
_NO_LIMIT = "none"


class _Missing(enum.Enum):
    """Not in the cache: unlike None (no limit), the database must be asked."""

    MISSING = enum.auto()


_MISSING = _Missing.MISSING


class BudgetJson(TypedDict):
    """A budget as the API and `chat_usage --format json` show it: amounts as strings."""

    limit: str | None
    spent: str
    currency: str
    period: str
    period_start: str
    resets_at: str
    exceeded: bool


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A person's limit (None: no limit) and what they spent in `period`."""

    limit: Decimal | None
    spent: Decimal
    period: Period

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    def as_dict(self) -> BudgetJson:
        return {
            "limit": None if self.limit is None else f"{self.limit:.2f}",
            "spent": f"{self.spent.normalize():f}",
            "currency": "USD",
            "period": self.period.name,
            "period_start": self.period.start.isoformat(),
            "resets_at": self.period.end.isoformat(),
            "exceeded": self.exceeded,
        }


def default_limit() -> Decimal | None:
    value = settings.CHAT_BUDGET_USD
    return None if value is None else Decimal(value)


def limit_of(budget: Budget | None) -> Decimal | None:
    """The limit a person's own `Budget` row (or its absence) gives them."""
    if budget is None or (budget.limit_usd is None and not budget.unlimited):
        return default_limit()
    return None if budget.unlimited else budget.limit_usd


def spend_of(user_ids: list[int], period: Period) -> dict[int, Decimal]:
    """Each user's spend in `period`, in one query."""
    rows = (
        Message.objects.filter(spend_filter(period), conversation__owner_id__in=user_ids)
        .values("conversation__owner_id")
        .annotate(spent=Sum("cost", default=Decimal(0)))
        .order_by()
    )
    return {row["conversation__owner_id"]: row["spent"] for row in rows}


def spend_filter(period: Period) -> Q:
    """The messages whose cost counts in `period`."""
    return Q(role=Message.Role.ASSISTANT, finished_at__gte=period.start, finished_at__lt=period.end)


def _limit_key(user_id: int) -> str:
    return f"chat:budget:limit:{user_id}"


def _spend_key(user_id: int, period: Period) -> str:
    return f"chat:budget:spend:{user_id}:{period.name}:{period.start.date().isoformat()}"


def _from_cache(user_id: int, period: Period) -> tuple[str | None, str | None]:
    """The cached limit (`_NO_LIMIT` for none) and, in a shared cache, the spend."""
    keys = [_limit_key(user_id)]
    if cache_is_shared():
        keys.append(_spend_key(user_id, period))
    found = cache.get_many(keys)
    spend = found.get(keys[1]) if len(keys) > 1 else None
    return found.get(keys[0]), spend


def _from_database(
    user_id: int,
    period: Period,
    *,
    limit: Decimal | None | Literal[_Missing.MISSING],
    with_spend: bool,
) -> tuple[Decimal | None, Decimal | None]:
    """What the cache lacked: the limit when `limit` is `_MISSING`, then the spend when
    it is wanted or there is a limit to compare it with."""
    if limit is _MISSING:
        limit = limit_of(Budget.objects.filter(user_id=user_id).first())
        cache.set(
            _limit_key(user_id),
            _NO_LIMIT if limit is None else str(limit),
            timeout=LIMIT_CACHE_SECONDS,
        )
    if not with_spend and limit is None:
        return limit, None
    spent = spend_of([user_id], period).get(user_id, Decimal(0))
    if cache_is_shared():
        cache.set(_spend_key(user_id, period), str(spent), SPEND_CACHE_SECONDS)
    return limit, spent


async def budget_status(*, user_id: int, with_spend: bool = True) -> BudgetStatus:
    """A person's limit and spend this period (the spend only when asked for, or when
    there is a limit to compare it with). The cache first, the database for the rest."""
    period = budget_period()
    cached_limit, cached_spend = await run_cache_ops(_from_cache, user_id, period)
    limit: Decimal | None | Literal[_Missing.MISSING] = _MISSING
    if cached_limit is not None:
        limit = None if cached_limit == _NO_LIMIT else Decimal(cached_limit)
    spent: Decimal | None = None
    if cached_spend is not None:
        spent = Decimal(cached_spend)
    wants_spend = with_spend or limit is not None
    if limit is _MISSING or (wants_spend and spent is None):
        limit, spent = await sync_to_async(_from_database)(
            user_id, period, limit=limit, with_spend=with_spend
        )
    return BudgetStatus(limit=limit, spent=spent or Decimal(0), period=period)


async def budget_check(*, user_id: int, opening: int | None = None) -> None:
    """Refuse a new turn when the person's spend this period has reached their limit; or,
    with `opening`, the first opening of that deferred turn (a later one only follows it,
    and a person over budget may still read their replies)."""
    status = await budget_status(user_id=user_id, with_spend=False)
    if not status.exceeded:
        return
    if opening is not None:
        waiting = Message.objects.filter(
            pk=opening, status=Message.Status.PENDING, conversation__owner_id=user_id
        )
        if not await waiting.aexists():
            return
    raise LimitExceeded(
        "budget_exceeded",
        f"Your budget of ${status.limit:.2f} per {status.period.name} is used up "
        f"(spent ${status.spent:.2f}); it resets at "
        f"{timezone.localtime(status.period.end):%Y-%m-%d %H:%M} ({settings.TIME_ZONE}).",
        retry_after=status.period.seconds_left(),
    )


def budget_spent_changed(user_id: int) -> None:
    """A turn of this person was recorded: drop the cached sum, so the next check (on any
    worker) reads the database, which holds the turn now. A cache op: run it through
    `run_cache_ops`."""
    if cache_is_shared():
        cache.delete(_spend_key(user_id, budget_period()))


def budget_forget(user_id: int) -> None:
    """Drop a person's cached limit after an admin changed it."""
    cache.delete(_limit_key(user_id))


def budgets_by_username(usernames: list[str]) -> dict[str, BudgetStatus]:
    """Each named person's limit and spend this period (for reports): two queries."""
    period = budget_period()
    users = list(
        get_user_model()
        .objects.filter(username__in=usernames)
        .select_related("chat_budget")
        .only("pk", "username", "chat_budget__limit_usd", "chat_budget__unlimited")
    )
    spent = spend_of([user.pk for user in users], period)
    return {
        user.username: BudgetStatus(
            limit=limit_of(getattr(user, "chat_budget", None)),
            spent=spent.get(user.pk, Decimal(0)),
            period=period,
        )
        for user in users
    }
