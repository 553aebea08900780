"""Usage report selector: who spent what, on which model, when.

The admin dashboard and `manage.py chat_usage` both read through `usage_summary`, so the
page and the command always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict, TypeGuard

from django.db import connection
from django.db.models import (
    Aggregate,
    CharField,
    Count,
    F,
    FloatField,
    Func,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from chat.models import Message
from chat.spend.budgets import BudgetJson, BudgetStatus, budgets_by_username

Group = Literal["day", "model", "user"]
GROUPS: tuple[Group, ...] = ("day", "model", "user")
ANONYMOUS = "anonymous"
# What a row is grouped by, as the database returns it: a day, a model, a username.
GroupValue = date | str | None


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


class _PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate; SQLite has none, so there it is done in Python."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, *, fraction: float) -> None:
        # A float we choose, never user input, so it may be formatted into the SQL.
        super().__init__(expression, fraction=float(fraction))


def usage_summary(*, since: datetime, until: datetime, by: Group) -> UsageReport:
    """Assistant messages created in [since, until), grouped `by` day (in the current time
    zone), model, or user (owner's username, `anonymous` for anonymous conversations)."""
    messages = _assistant_messages(since=since, until=until)
    metrics = _metrics()
    grouped = messages.annotate(group=_group_key(by)).values("group").annotate(**metrics).order_by()
    totals = messages.aggregate(**metrics)
    if _percentiles_in_sql():
        ttfts: dict[GroupValue, list[int]] = {}
        total_ttfts: list[int] = []
    else:
        ttfts = _ttfts_by_group(messages, by)
        total_ttfts = sorted(t for values in ttfts.values() for t in values)
    rows = [_row(_key(group["group"]), group, ttfts.get(group["group"], [])) for group in grouped]
    if by == "day":
        rows.sort(key=lambda row: row.key)
    else:
        rows.sort(key=lambda row: (-row.cost, -row.requests, row.key))
    return UsageReport(
        since=since, until=until, by=by, rows=rows, totals=_row("total", totals, total_ttfts)
    )


def _assistant_messages(*, since: datetime, until: datetime) -> QuerySet[Message]:
    return Message.objects.filter(
        role=Message.Role.ASSISTANT, created_at__gte=since, created_at__lt=until
    )


def _group_key(by: Group) -> F | Func:
    if by == "day":
        return TruncDate("created_at", tzinfo=timezone.get_current_timezone())
    if by == "model":
        return F("model")
    return Coalesce(F("conversation__owner__username"), Value(ANONYMOUS), output_field=CharField())


def _metrics() -> dict[str, Aggregate]:
    metrics: dict[str, Aggregate] = {
        "requests": Count("pk"),
        "failed": Count("pk", filter=Q(status=Message.Status.FAILED)),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "cost": Sum("cost", default=Decimal(0)),
    }
    if _percentiles_in_sql():
        metrics["ttft_median_ms"] = _PercentileCont("ttft_ms", fraction=0.5)
        metrics["ttft_p95_ms"] = _PercentileCont("ttft_ms", fraction=0.95)
    return metrics


def _percentiles_in_sql() -> bool:
    return connection.vendor == "postgresql"


def _ttfts_by_group(messages: QuerySet[Message], by: Group) -> dict[GroupValue, list[int]]:
    """Sorted time-to-first-token samples per group: one query, ints only."""
    samples: dict[GroupValue, list[int]] = {}
    rows = (
        messages.filter(ttft_ms__isnull=False)
        .annotate(group=_group_key(by))
        .values_list("group", "ttft_ms")
        .order_by("ttft_ms")
    )
    for group, ttft in rows.iterator(chunk_size=2000):
        if ttft is not None:  # always: the filter above leaves NULLs out
            samples.setdefault(group, []).append(ttft)
    return samples


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: what PostgreSQL's percentile_cont does."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] * (1 - weight) + sorted_values[upper] * weight


def _row(key: str, values: dict[str, Any], ttfts: list[int]) -> UsageRow:
    if "ttft_median_ms" in values:
        median, p95 = values["ttft_median_ms"], values["ttft_p95_ms"]
    else:
        median, p95 = percentile(ttfts, 0.5), percentile(ttfts, 0.95)
    return UsageRow(
        key=key,
        requests=values["requests"],
        failed=values["failed"],
        input_tokens=values["input_tokens"],
        output_tokens=values["output_tokens"],
        cost=Decimal(values["cost"]),
        ttft_median_ms=median,
        ttft_p95_ms=p95,
    )


def _key(group: GroupValue) -> str:
    if isinstance(group, date):
        return group.isoformat()
    return str(group) if group else "(none)"


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
]


BUDGET_HEADER = ["budget_usd", "spent_this_period_usd"]


def usage_table(report: UsageReport) -> list[list[str]]:
    """The report as text cells (rows, then the totals row), shared by CSV and table output.
    By user, each person's budget and spend this budget period follow."""
    header = [report.by, *TABLE_HEADER[1:]]
    table = [header, *(_cells(row) for row in [*report.rows, report.totals])]
    if report.by != "user":
        return table
    people = budgets_by_username([row.key for row in report.rows])
    header += BUDGET_HEADER
    for cells, row in zip(table[1:], [*report.rows, None], strict=True):
        cells += _budget_cells(people.get(row.key) if row else None)
    return table


def _budget_cells(status: BudgetStatus | None) -> list[str]:
    if status is None:  # the totals row, or anonymous visitors: no budget
        return ["", ""]
    limit = "no limit" if status.limit is None else f"{status.limit:.2f}"
    return [limit, f"{status.spent:.8f}"]


def _cells(row: UsageRow) -> list[str]:
    return [
        row.key,
        str(row.requests),
        str(row.failed),
        f"{row.failure_rate:.4f}",
        str(row.input_tokens),
        str(row.output_tokens),
        f"{row.cost:.8f}",
        _ms(row.ttft_median_ms),
        _ms(row.ttft_p95_ms),
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
    }
