"""The tool-call ledger (`DailyToolUsage`): per day, tool and runner, how many calls,
how many failed, and how long they took; and its summary for the usage dashboard (one
query). Counted from a finished reply's parts, in its finish transaction, so each call
is counted once, when its turn is recorded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection
from django.db.models import Sum

from chat.models import DailyToolUsage, DailyUsage
from chat.spend.ledger import ledger_day

Key = tuple[date, str, str]  # day, tool, runner
_AMOUNTS = ("calls", "errors", "duration_ms")


def tool_calls_record(*, finished_at: datetime, replies: Iterable[list[dict[str, Any]]]) -> None:
    """Count the tool calls (and hosted web searches) of replies recorded just now, in the
    caller's transaction: one additive upsert per key, keys in sorted order."""
    day = ledger_day(finished_at)
    amounts: dict[Key, Counter[str]] = {}
    for parts in replies:
        runners = {p["id"]: p.get("runner") or "none" for p in parts if p["type"] == "tool_call"}
        for part in parts:
            if part["type"] == "tool_result":
                counted = amounts.setdefault(
                    (day, part["name"], runners.get(part["id"], "none")), Counter()
                )
                counted.update(
                    calls=1,
                    errors=int(bool(part.get("error"))),
                    duration_ms=part.get("duration_ms") or 0,
                )
            elif part["type"] == "web_search" and part.get("status") == "completed":
                amounts.setdefault((day, "web_search", "provider"), Counter()).update(calls=1)
    if not amounts:
        return
    table = connection.ops.quote_name(DailyToolUsage._meta.db_table)
    names = ["day", "tool", "runner", *_AMOUNTS]
    quoted = [connection.ops.quote_name(n) for n in names]
    sql = (
        f"INSERT INTO {table} ({', '.join(quoted)}) VALUES ({', '.join(['%s'] * len(quoted))}) "
        f"ON CONFLICT ({', '.join(quoted[:3])}) DO UPDATE SET "
        + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in quoted[3:])
    )
    with connection.cursor() as cursor:
        for key in sorted(amounts):
            cursor.execute(sql, [*key, *(amounts[key][a] for a in _AMOUNTS)])


@dataclass(frozen=True, slots=True)
class ToolCallRow:
    tool: str
    runner: str
    calls: int
    errors: int
    duration_ms: int

    @property
    def mean_ms(self) -> float | None:
        return self.duration_ms / self.calls if self.calls and self.runner != "provider" else None


def tool_calls_summary(*, since: datetime, until: datetime) -> list[ToolCallRow]:
    """Calls by tool and runner in [since, until), the most called first."""
    days = {"day__gte": ledger_day(since), "day__lt": ledger_day(until)}
    rows = (
        DailyToolUsage.objects.filter(**days)
        .values("tool", "runner")
        .annotate(calls=Sum("calls"), errors=Sum("errors"), duration_ms=Sum("duration_ms"))
        .order_by("-calls", "tool", "runner")
    )
    return [ToolCallRow(**row) for row in rows]


def reasoning_tokens_total(*, since: datetime, until: datetime) -> int:
    """Reasoning tokens in [since, until), from the usage ledger."""
    found = DailyUsage.objects.filter(
        day__gte=ledger_day(since), day__lt=ledger_day(until)
    ).aggregate(total=Sum("reasoning_tokens"))
    return int(found["total"] or 0)
