"""Usage report selector: who spent what, on which model, when.

The admin dashboard, its CSV files and `manage.py chat_usage` all read through
`usage_summary`, from the usage ledger (`chat.spend.ledger`), so the page and the command
always show the same numbers, at the cost of a few ledger rows per day. Times to first
token are read from the ledger's histogram: a median or p95 is exact to its bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict, TypeGuard

from django.contrib.auth import get_user_model
from django.db.models import Sum

from chat.models import TTFT_BUCKETS_MS, TTFT_FIELDS, DailyUsage
from chat.money import usd
from chat.spend.budgets import BudgetJson, BudgetStatus, budgets_by_username
from chat.spend.ledger import E8, ledger_day

Group = Literal["day", "model", "user"]
GROUPS: tuple[Group, ...] = ("day", "model", "user")
ANONYMOUS = "anonymous"
# What a row is grouped by, as the ledger returns it: a day, a model, a user id.
GroupValue = date | str | int | None


def is_group(value: str) -> TypeGuard[Group]:
    return value in GROUPS


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group of assistant messages (a day, a model or a user), or the period's total."""

    key: str
    requests: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    ttft_median_ms: float | None
    ttft_p95_ms: float | None
    reasoning_tokens: int = 0  # of the output tokens, those spent thinking

    @property
    def failure_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @property
    def failure_percent(self) -> float:
        return self.failure_rate * 100

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class UsageReport:
    since: datetime
    until: datetime
    by: Group
    rows: list[UsageRow]
    totals: UsageRow


def usage_summary(*, since: datetime, until: datetime, by: Group) -> UsageReport:
    """Replies that reached their final status in [since, until) (whole days in
    `TIME_ZONE`), grouped `by` day, model, or user (username; `anonymous` for anonymous
    visitors). Read from the usage ledger: a few rows per day, however many messages."""
    days = DailyUsage.objects.filter(day__gte=ledger_day(since), day__lt=ledger_day(until))
    sums = {field: Sum(field, default=0) for field in _SUMMED}
    grouped = list(days.values(_GROUP_FIELD[by]).annotate(**sums).order_by())
    # The totals are the groups' sums: no second pass over the ledger.
    totals = {field: sum(group[field] for group in grouped) for field in _SUMMED}
    names = _usernames([g["user_id"] for g in grouped]) if by == "user" else {}
    merged: dict[str, dict[str, int]] = {}
    for group in grouped:
        key = _group_key(group[_GROUP_FIELD[by]], names)
        into = merged.setdefault(key, dict.fromkeys(_SUMMED, 0))
        for field in _SUMMED:
            into[field] += group[field]
    rows = [_row(key, values) for key, values in merged.items()]
    if by == "day":
        rows.sort(key=lambda row: row.key)
    else:
        rows.sort(key=lambda row: (-row.cost, -row.requests, row.key))
    return UsageReport(since=since, until=until, by=by, rows=rows, totals=_row("total", totals))


_GROUP_FIELD: dict[Group, str] = {"day": "day", "model": "model", "user": "user_id"}
_SUMMED = (
    "requests",
    "failed",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_e8",
    *TTFT_FIELDS,
)


def _usernames(user_ids: list[int]) -> dict[int, str]:
    wanted = [u for u in user_ids if u]
    return dict(get_user_model().objects.filter(pk__in=wanted).values_list("pk", "username"))


def _group_key(value: GroupValue, names: dict[int, str]) -> str:
    if isinstance(value, int):  # by user: 0 for anonymous visitors
        return names.get(value, f"deleted user #{value}") if value else ANONYMOUS
    if isinstance(value, date):
        return value.isoformat()
    return str(value) if value else "(none)"


def histogram_percentile(counts: list[int], fraction: float) -> float | None:
    """A percentile of time to first token from the ledger's bucket counts (one per
    `TTFT_BUCKETS_MS` edge, then the overflow): linear within the bucket it falls in
    (from the previous edge, 0 for the first), the last edge for the overflow bucket."""
    total = sum(counts)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    lower = 0.0
    for edge, count in zip((*TTFT_BUCKETS_MS, None), counts, strict=True):
        if count and seen + count >= rank:
            if edge is None:
                return lower
            return lower + (edge - lower) * max(rank - seen, 0) / count
        seen += count
        if edge is not None:
            lower = float(edge)
    return lower


def _row(key: str, values: dict[str, Any]) -> UsageRow:
    counts = [int(values[field] or 0) for field in TTFT_FIELDS]
    return UsageRow(
        key=key,
        requests=values["requests"],
        failed=values["failed"],
        input_tokens=values["input_tokens"],
        output_tokens=values["output_tokens"],
        cost=Decimal(int(values["cost_e8"])) / E8,
        ttft_median_ms=histogram_percentile(counts, 0.5),
        ttft_p95_ms=histogram_percentile(counts, 0.95),
        reasoning_tokens=values["reasoning_tokens"],
    )


# --- Tables ----------------------------------------------------------------------------

TABLE_HEADER = [
    "group",
    "requests",
    "failed",
    "failure_rate",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "ttft_median_ms",
    "ttft_p95_ms",
    "reasoning_tokens",
]


BUDGET_HEADER = ["budget_usd", "spent_this_period_usd"]


def usage_table(report: UsageReport, *, readable: bool = False) -> list[list[str]]:
    """The report as text cells (rows, then the totals row), shared by CSV and table output.
    By user, each person's budget and spend this budget period follow. Amounts are full
    precision for machines (CSV), or `readable` as people read them (`chat.money`)."""
    money = usd if readable else _full_precision
    header = [report.by, *TABLE_HEADER[1:]]
    table = [header, *(_cells(row, money) for row in [*report.rows, report.totals])]
    if report.by != "user":
        return table
    people = budgets_by_username([row.key for row in report.rows])
    header += BUDGET_HEADER
    for cells, row in zip(table[1:], [*report.rows, None], strict=True):
        cells += _budget_cells(people.get(row.key) if row else None, money)
    return table


def _full_precision(amount: Decimal) -> str:
    return f"{amount:.8f}"


def _budget_cells(status: BudgetStatus | None, money: Callable[[Decimal], str]) -> list[str]:
    if status is None:  # the totals row, or anonymous visitors: no budget
        return ["", ""]
    if status.limit is None:
        limit = "no limit"
    else:
        limit = money(status.limit) if money is usd else f"{status.limit:.2f}"
    return [limit, money(status.spent)]


def _cells(row: UsageRow, money: Callable[[Decimal], str]) -> list[str]:
    return [
        row.key,
        str(row.requests),
        str(row.failed),
        f"{row.failure_rate:.4f}",
        str(row.input_tokens),
        str(row.output_tokens),
        money(row.cost),
        _ms(row.ttft_median_ms),
        _ms(row.ttft_p95_ms),
        str(row.reasoning_tokens),
    ]


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


class UsageJsonRow(TypedDict):
    group: str
    requests: int
    failed: int
    failure_rate: float
    input_tokens: int
    output_tokens: int
    cost: str
    ttft_median_ms: float | None
    ttft_p95_ms: float | None
    reasoning_tokens: int
    # By user only: the person's budget this period (None for anonymous visitors).
    budget: NotRequired[BudgetJson | None]


class UsageJson(TypedDict):
    """`manage.py chat_usage --format json`."""

    since: str
    until: str
    by: Group
    rows: list[UsageJsonRow]
    totals: UsageJsonRow


def usage_json(report: UsageReport) -> UsageJson:
    rows = [_json_row(row) for row in report.rows]
    if report.by == "user":
        people = budgets_by_username([row.key for row in report.rows])
        for row in rows:
            status = people.get(row["group"])
            row["budget"] = status.as_dict() if status else None
    return {
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "by": report.by,
        "rows": rows,
        "totals": _json_row(report.totals),
    }


def _json_row(row: UsageRow) -> UsageJsonRow:
    return {
        "group": row.key,
        "requests": row.requests,
        "failed": row.failed,
        "failure_rate": round(row.failure_rate, 4),
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost": f"{row.cost:.8f}",
        "ttft_median_ms": row.ttft_median_ms,
        "ttft_p95_ms": row.ttft_p95_ms,
        "reasoning_tokens": row.reasoning_tokens,
    }
