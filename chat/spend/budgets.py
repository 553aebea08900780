"""Spending budgets in money: each person's limit per day, week or month, the limits of
their Django groups, and their spend.

A person's limit is `CHAT_BUDGET_USD` unless an admin gave them their own (`Budget`: an
amount, or no limit at all). A group's (`GroupBudget`) caps its members' spend together.
Spend is the cost of the turns that finished in the current period (`CHAT_BUDGET_PERIOD`,
in `TIME_ZONE`), whatever their status (a cancelled or failed turn that used tokens was
billed too), read from the usage ledger (`chat.spend.ledger`): a few rows per person per
day, so a check costs the same at any number of stored messages.

A new turn is refused while the person's spend, or any of their groups', has reached its
limit, and so is the first opening of a deferred turn (it is only then that the model is
called). Turns already running when it is reached still finish, so the overshoot is at
most those turns. With a shared cache (Redis) the sums are kept there between turns and
dropped whenever one of the person's turns is recorded, so every worker reads them
afresh; an in-process cache cannot be dropped for the other workers, so there each check
reads the database. Anonymous visitors have no account and no budget (the rate limit and
token quota still apply to them).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import OuterRef, Q, Subquery, Sum
from django.utils import timezone

from chat.errors import LimitExceeded
from chat.models import Budget, DailyUsage, GroupBudget, Message
from chat.money import usd
from chat.spend.counters import cache_is_shared, run_cache_ops
from chat.spend.ledger import E8, ledger_day
from chat.spend.periods import Period, budget_period

# A cached limit is re-read this often, so an admin's change reaches every worker.
LIMIT_CACHE_SECONDS = 60
# A cached sum is read again from the database at least this often: a turn recorded
# outside the web path (`manage.py chat`) does not drop it, and counts within that time.
SPEND_CACHE_SECONDS = 60


class _Missing(enum.Enum):
    """Not in the cache: unlike None (no limits), the database must be asked."""

    MISSING = enum.auto()


_MISSING = _Missing.MISSING


class GroupBudgetJson(TypedDict):
    name: str
    limit: str
    spent: str
    exceeded: bool


class BudgetJson(TypedDict):
    """A budget as the API and `chat_usage --format json` show it: amounts as strings.
    `limit`/`spent` are the person's own; `groups` their groups' shared limits; `warning`
    says some limit is used to `warn_percent` or more."""

    limit: str | None
    spent: str
    currency: str
    period: str
    period_start: str
    resets_at: str
    exceeded: bool
    warning: bool
    warn_percent: int
    groups: list[GroupBudgetJson]


@dataclass(frozen=True, slots=True)
class GroupLimit:
    group_id: int
    name: str
    limit: Decimal


@dataclass(frozen=True, slots=True)
class Limits:
    """What a person may spend per period: their own limit (None: none) and their groups'."""

    own: Decimal | None
    groups: tuple[GroupLimit, ...] = ()

    def any(self) -> bool:
        return self.own is not None or bool(self.groups)

    def dumps(self) -> str:
        return json.dumps(
            {
                "own": None if self.own is None else str(self.own),
                "groups": [[g.group_id, g.name, str(g.limit)] for g in self.groups],
            }
        )

    @classmethod
    def loads(cls, text: str) -> Limits:
        data = json.loads(text)
        own = None if data["own"] is None else Decimal(data["own"])
        groups = tuple(GroupLimit(gid, name, Decimal(limit)) for gid, name, limit in data["groups"])
        return cls(own=own, groups=groups)


@dataclass(frozen=True, slots=True)
class GroupStatus:
    name: str
    limit: Decimal
    spent: Decimal

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.limit


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A person's limit (None: no limit) and what they spent in `period`, and each of
    their groups' limit and spend."""

    limit: Decimal | None
    spent: Decimal
    period: Period
    groups: tuple[GroupStatus, ...] = ()

    @property
    def own_exceeded(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    @property
    def exceeded(self) -> bool:
        return self.own_exceeded or any(g.exceeded for g in self.groups)

    @property
    def warning(self) -> bool:
        """Some limit is used to CHAT_BUDGET_WARN_PERCENT or more."""
        share = Decimal(settings.CHAT_BUDGET_WARN_PERCENT) / 100
        pairs = [(self.limit, self.spent), *((g.limit, g.spent) for g in self.groups)]
        return any(limit is not None and spent >= limit * share for limit, spent in pairs)

    def as_dict(self) -> BudgetJson:
        return {
            "limit": None if self.limit is None else f"{self.limit:.2f}",
            "spent": _amount(self.spent),
            "currency": "USD",
            "period": self.period.name,
            "period_start": self.period.start.isoformat(),
            "resets_at": self.period.end.isoformat(),
            "exceeded": self.exceeded,
            "warning": self.warning,
            "warn_percent": settings.CHAT_BUDGET_WARN_PERCENT,
            "groups": [
                {
                    "name": g.name,
                    "limit": f"{g.limit:.2f}",
                    "spent": _amount(g.spent),
                    "exceeded": g.exceeded,
                }
                for g in self.groups
            ],
        }


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def default_limit() -> Decimal | None:
    value = settings.CHAT_BUDGET_USD
    return None if value is None else Decimal(value)


def limit_of(budget: Budget | None) -> Decimal | None:
    """The limit a person's own `Budget` row (or its absence) gives them."""
    if budget is None or (budget.limit_usd is None and not budget.unlimited):
        return default_limit()
    return None if budget.unlimited else budget.limit_usd


def _ledger_days(period: Period) -> Q:
    return Q(day__gte=ledger_day(period.start), day__lt=ledger_day(period.end))


def spend_of(user_ids: list[int], period: Period) -> dict[int, Decimal]:
    """Each user's spend in `period`, in one query over the ledger."""
    rows = (
        DailyUsage.objects.filter(_ledger_days(period), user_id__in=user_ids)
        .values("user_id")
        .annotate(spent=Sum("cost_e8", default=0))
        .order_by()
    )
    return {row["user_id"]: Decimal(row["spent"]) / E8 for row in rows}


def group_spend_of(group_ids: list[int], period: Period) -> dict[int, Decimal]:
    """Each group's members' spend together in `period`: one query per group."""
    through = get_user_model().groups.through
    spent = {}
    for group_id in group_ids:
        members = through.objects.filter(group_id=group_id).values("user_id")
        total = DailyUsage.objects.filter(_ledger_days(period), user_id__in=members).aggregate(
            spent=Sum("cost_e8", default=0)
        )["spent"]
        spent[group_id] = Decimal(total) / E8
    return spent


def period_spend() -> Subquery:
    """A person's spend this period as a subquery on `OuterRef("pk")` (the people list)."""
    return Subquery(
        DailyUsage.objects.filter(_ledger_days(budget_period()), user_id=OuterRef("pk"))
        .values("user_id")
        .annotate(total=Sum("cost_e8"))
        .values("total")
    )


def _limits_key(user_id: int) -> str:
    return f"chat:budget:limits:{user_id}"


def _spend_key(user_id: int, period: Period) -> str:
    return f"chat:budget:spend:{user_id}:{period.name}:{period.start.date().isoformat()}"


def _group_spend_key(group_id: int, period: Period) -> str:
    return f"chat:budget:group:{group_id}:{period.name}:{period.start.date().isoformat()}"


def limits_of(user_id: int) -> Limits:
    """A person's own limit and their groups' limits: two small queries."""
    own = limit_of(Budget.objects.filter(user_id=user_id).first())
    groups = tuple(
        GroupLimit(group_id, name, limit)
        for group_id, name, limit in GroupBudget.objects.filter(group__user__id=user_id)
        .order_by("group__name")
        .values_list("group_id", "group__name", "limit_usd")
    )
    return Limits(own=own, groups=groups)


def _status(
    user_id: int,
    period: Period,
    limits: Limits | None,
    cached: dict[str, Any],
    with_spend: bool,
) -> BudgetStatus:
    """The status from what the cache held (`limits`, None when not cached; `cached`:
    cache key → value), reading the database for the rest and keeping it in the cache."""
    if limits is None:
        limits = limits_of(user_id)
        cache.set(_limits_key(user_id), limits.dumps(), timeout=LIMIT_CACHE_SECONDS)
    if not with_spend and not limits.any():
        return BudgetStatus(limit=None, spent=Decimal(0), period=period)
    shared = cache_is_shared()
    spent_key = _spend_key(user_id, period)
    if spent_key in cached:
        spent = Decimal(cached[spent_key])
    else:
        spent = spend_of([user_id], period).get(user_id, Decimal(0))
        if shared:
            cache.set(spent_key, str(spent), SPEND_CACHE_SECONDS)
    group_keys = {g.group_id: _group_spend_key(g.group_id, period) for g in limits.groups}
    missing = [gid for gid, key in group_keys.items() if key not in cached]
    group_spent = {gid: Decimal(cached[key]) for gid, key in group_keys.items() if key in cached}
    if missing:
        fresh = group_spend_of(missing, period)
        group_spent.update(fresh)
        if shared:
            cache.set_many(
                {group_keys[gid]: str(value) for gid, value in fresh.items()}, SPEND_CACHE_SECONDS
            )
    return BudgetStatus(
        limit=limits.own,
        spent=spent,
        period=period,
        groups=tuple(
            GroupStatus(name=g.name, limit=g.limit, spent=group_spent[g.group_id])
            for g in limits.groups
        ),
    )


def _from_cache(user_id: int, period: Period) -> tuple[Limits | None, dict[str, Any]]:
    """What the cache holds for this person: their limits (None when not cached) and, in
    a shared cache, their spend and, once their groups are known, their groups' spend.
    One round trip when the limits are cached in the same shared cache (usually), else
    two."""
    limits_key = _limits_key(user_id)
    keys = [limits_key]
    if cache_is_shared():
        keys.append(_spend_key(user_id, period))
    found = cache.get_many(keys)
    limits = Limits.loads(found[limits_key]) if limits_key in found else None
    if limits is not None and limits.groups and cache_is_shared():
        found.update(cache.get_many([_group_spend_key(g.group_id, period) for g in limits.groups]))
    return limits, found


async def budget_status(*, user_id: int, with_spend: bool = True) -> BudgetStatus:
    """A person's limits and spend this period (the spend only when asked for, or when
    there is a limit to compare it with). The cache first, the database for the rest."""
    period = budget_period()
    limits, cached = await run_cache_ops(_from_cache, user_id, period)
    if _complete(user_id, period, limits, cached, with_spend):
        return _status(user_id, period, limits, cached, with_spend)
    return await sync_to_async(_status)(user_id, period, limits, cached, with_spend)


def _complete(
    user_id: int, period: Period, limits: Limits | None, cached: dict[str, Any], with_spend: bool
) -> bool:
    """Whether the cache answered everything, so no database query (and no thread hop)."""
    if limits is None:
        return False
    if not with_spend and not limits.any():
        return True
    if _spend_key(user_id, period) not in cached:
        return False
    return all(_group_spend_key(g.group_id, period) in cached for g in limits.groups)


async def budget_check(*, user_id: int, opening: int | None = None) -> None:
    """Refuse a new turn when the person's spend this period, or a group's, has reached
    its limit; or, with `opening`, the first opening of that deferred turn (a later one
    only follows it, and a person over budget may still read their replies)."""
    status = await budget_status(user_id=user_id, with_spend=False)
    if not status.exceeded:
        return
    if opening is not None:
        waiting = Message.objects.filter(
            pk=opening, status=Message.Status.PENDING, conversation__owner_id=user_id
        )
        if not await waiting.aexists():
            return
    resets = (
        f"it resets at {timezone.localtime(status.period.end):%Y-%m-%d %H:%M} "
        f"({settings.TIME_ZONE})."
    )
    if status.own_exceeded:
        message = (
            f"Your budget of ${status.limit:.2f} per {status.period.name} is used up "
            f"(spent {usd(status.spent)}); {resets}"
        )
    else:
        group = next(g for g in status.groups if g.exceeded)
        message = (
            f"The budget of your group {group.name!r}, ${group.limit:.2f} per "
            f"{status.period.name}, is used up (spent {usd(group.spent)}); {resets}"
        )
    raise LimitExceeded("budget_exceeded", message, retry_after=status.period.seconds_left())


def budget_spent_changed(user_id: int) -> None:
    """A turn of this person was recorded: drop the cached sums (theirs and their groups'),
    so the next check (on any worker) reads the ledger, which holds the turn now. Cache
    ops: run it through `run_cache_ops`."""
    if not cache_is_shared():
        return
    period = budget_period()
    keys = [_spend_key(user_id, period)]
    limits = cache.get(_limits_key(user_id))
    if limits is not None:
        keys += [_group_spend_key(g.group_id, period) for g in Limits.loads(limits).groups]
    cache.delete_many(keys)


def budget_forget(user_id: int) -> None:
    """Drop a person's cached limits after an admin changed them."""
    cache.delete(_limits_key(user_id))


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
