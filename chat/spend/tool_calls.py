"""The tool-call ledger (`DailyToolUsage`): per day, tool and runner, how many calls,
how many failed, how long they took and what they cost; and its summary for the usage
dashboard and `chat_usage` (one query).

A reply's tool calls are priced when it finishes (`tool_calls_priced`, from `ToolPrice`)
and kept on its model calls (`Message.rounds`: each round's `tool_calls`, and its hosted
`web_searches` with their cost), which `chat_purge` never removes. The ledger is counted
from those in the reply's finish transaction, so each call is counted once, when its turn
is recorded; `tool_calls_verify` and `tool_calls_rebuild` compare and refill it from the
same rows (`manage.py chat_ledger`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Sum

from chat.models import DailyToolUsage, Message
from chat.spend.ledger import (
    Difference,
    cost_e8,
    ledger_day,
    ledger_differences,
    ledger_rows_in_days,
    replies_in_days,
)
from chat.spend.prices import WEB_SEARCH, calls_cost, tool_price_now

_AMOUNTS = ("calls", "errors", "duration_ms", "cost_e8")
ToolCall = dict[str, Any]  # {"tool", "runner", "error", "duration_ms", "cost"?, "ran"?}


@dataclass(frozen=True, slots=True, order=True)
class ToolKey:
    day: date
    tool: str
    runner: str

    def label(self) -> str:
        return f"{self.day} tool {self.tool} ({self.runner})"


ToolChanges = dict[ToolKey, Counter[str]]


def tool_calls_of(parts: Sequence[dict[str, Any]]) -> list[list[ToolCall]]:
    """A reply's tool calls from its parts, grouped by the model call that asked for them
    (each round's calls are stored together, then their results), in order."""
    groups: list[list[ToolCall]] = []
    calls: dict[str, ToolCall] = {}
    previous = ""
    for part in parts:
        if part["type"] == "tool_call":
            if previous != "tool_call":
                groups.append([])
            call = {
                "tool": part["name"],
                "runner": part.get("runner") or "none",
                "error": False,
                "duration_ms": 0,
            }
            groups[-1].append(call)
            calls[part["id"]] = call
        elif part["type"] == "tool_result" and part["id"] in calls:
            calls[part["id"]].update(
                error=bool(part.get("error")), duration_ms=part.get("duration_ms") or 0
            )
            if part.get("ran") is False:
                calls[part["id"]]["ran"] = False
        previous = part["type"]
    return groups


def tool_calls_priced(
    parts: Sequence[dict[str, Any]], *, at: datetime
) -> tuple[list[list[ToolCall]], Decimal]:
    """A reply's tool calls by round, each call that ran priced (`ToolPrice`, per 1,000
    calls, in force at `at`; a tool without a price is free), and their total. A call the
    model made up, or one not run (the round limit, an MCP server that is down), is free."""
    groups = tool_calls_of(parts)
    total = Decimal(0)
    for call in (call for group in groups for call in group):
        if call["runner"] == "none" or call.get("ran") is False:
            continue
        price = tool_price_now(call["tool"], at)
        if price:
            cost = calls_cost(price, 1)
            call["cost"] = f"{cost:f}"
            total += cost
    return groups, total


def _amounts(
    day: date, rounds: list[dict[str, Any]] | None, parts: list[dict[str, Any]] | None = None
) -> ToolChanges:
    """The ledger's amounts of one reply: its rounds' tool calls and hosted searches. A
    reply recorded before its rounds named their calls has them counted from its parts
    (unpriced, as they were)."""
    changes: ToolChanges = {}
    rounds = rounds or []
    if parts and not any("tool_calls" in r for r in rounds):
        rounds = [{"tool_calls": calls} for calls in tool_calls_of(parts)] + rounds
    for r in rounds:
        for call in r.get("tool_calls") or ():
            changes.setdefault(ToolKey(day, call["tool"], call["runner"]), Counter()).update(
                calls=1,
                errors=int(bool(call.get("error"))),
                duration_ms=call.get("duration_ms") or 0,
                cost_e8=cost_e8(Decimal(call["cost"])) if call.get("cost") else 0,
            )
        if searches := int(r.get("web_searches") or 0):
            cost = r.get("web_searches_cost")
            changes.setdefault(ToolKey(day, WEB_SEARCH, "provider"), Counter()).update(
                calls=searches, cost_e8=cost_e8(Decimal(cost)) if cost else 0
            )
    return changes


def _merge(into: ToolChanges, changes: ToolChanges) -> None:
    for key, amounts in changes.items():
        into.setdefault(key, Counter()).update(amounts)


def tool_calls_record(*, finished_at: datetime, replies: Iterable[list[dict[str, Any]]]) -> None:
    """Count the tool calls and hosted web searches of replies recorded just now (each
    reply's stored rounds), in the caller's transaction."""
    day = ledger_day(finished_at)
    changes: ToolChanges = {}
    for rounds in replies:
        _merge(changes, _amounts(day, rounds))
    _add(changes)


def _add(changes: ToolChanges) -> None:
    """One additive upsert per key, keys in sorted order (no deadlock between batches)."""
    if not changes:
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
        for key in sorted(changes):
            amounts = changes[key]
            day = connection.ops.adapt_datefield_value(key.day)
            cursor.execute(sql, [day, key.tool, key.runner, *(amounts[a] for a in _AMOUNTS)])


# --- Proof and repair -----------------------------------------------------------------


def tool_calls_rows_totals(*, since: date | None = None, until: date | None = None) -> ToolChanges:
    """What the tool-call ledger should hold for [since, until], from the replies' stored
    rounds (read in chunks: an offline check, never on a request path)."""
    totals: ToolChanges = {}
    rows = (
        Message.objects.filter(replies_in_days(since, until), rounds__isnull=False)
        .values_list("finished_at", "created_at", "rounds", "parts")
        .iterator(chunk_size=2000)
    )
    for finished_at, created_at, rounds, parts in rows:
        _merge(totals, _amounts(ledger_day(finished_at or created_at), rounds, parts))
    return totals


def tool_calls_ledger_totals(
    *, since: date | None = None, until: date | None = None
) -> ToolChanges:
    rows = ledger_rows_in_days(DailyToolUsage.objects.all(), since, until)
    return {
        ToolKey(row["day"], row["tool"], row["runner"]): Counter({a: row[a] for a in _AMOUNTS})
        for row in rows.values("day", "tool", "runner", *_AMOUNTS)
    }


def tool_calls_verify(*, since: date | None = None, until: date | None = None) -> list[Difference]:
    """Keys where the tool-call ledger and the replies' rows disagree, in key order."""
    return ledger_differences(
        tool_calls_ledger_totals(since=since, until=until),
        tool_calls_rows_totals(since=since, until=until),
    )


def tool_calls_rebuild(*, since: date | None = None, until: date | None = None) -> int:
    """Refill [since, until] of the tool-call ledger from the rows, in one transaction;
    returns the keys written."""
    with transaction.atomic():
        ledger_rows_in_days(DailyToolUsage.objects.all(), since, until).delete()
        totals = tool_calls_rows_totals(since=since, until=until)
        _add(totals)
        return len(totals)


# --- Reports ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCallRow:
    tool: str
    runner: str
    calls: int
    errors: int
    duration_ms: int
    cost_e8: int

    @property
    def mean_ms(self) -> float | None:
        return self.duration_ms / self.calls if self.calls and self.runner != "provider" else None

    @property
    def cost(self) -> Decimal:
        return Decimal(self.cost_e8) / 10**8


def tool_calls_summary(*, since: datetime, until: datetime) -> list[ToolCallRow]:
    """Calls by tool and runner in [since, until), the most called first."""
    days = {"day__gte": ledger_day(since), "day__lt": ledger_day(until)}
    rows = (
        DailyToolUsage.objects.filter(**days)
        .values("tool", "runner")
        .annotate(**{a: Sum(a) for a in _AMOUNTS})
        .order_by("-calls", "tool", "runner")
    )
    return [ToolCallRow(**row) for row in rows]


TOOL_TABLE_HEADER = ["tool", "runner", "calls", "failed", "mean_ms", "cost_usd"]


def tool_calls_table(
    rows: list[ToolCallRow], *, money: Callable[[Decimal], str] = lambda d: f"{d:.8f}"
) -> list[list[str]]:
    """Tool calls as text cells (`chat_usage --by tool`): a row per tool and runner, then
    the total; amounts full precision unless `money` formats them for people."""
    total = ToolCallRow(
        tool="total",
        runner="",
        calls=sum(r.calls for r in rows),
        errors=sum(r.errors for r in rows),
        duration_ms=sum(r.duration_ms for r in rows if r.runner != "provider"),
        cost_e8=sum(r.cost_e8 for r in rows),
    )
    timed = sum(r.calls for r in rows if r.runner != "provider")
    return [
        TOOL_TABLE_HEADER,
        *(
            [
                row.tool,
                row.runner,
                str(row.calls),
                str(row.errors),
                "" if mean is None else f"{mean:.1f}",
                money(row.cost),
            ]
            for row, mean in [
                *((r, r.mean_ms) for r in rows),
                (total, total.duration_ms / timed if timed else None),
            ]
        ),
    ]


def tool_calls_json(rows: list[ToolCallRow]) -> list[dict[str, Any]]:
    return [
        {
            "tool": row.tool,
            "runner": row.runner,
            "calls": row.calls,
            "failed": row.errors,
            "mean_ms": row.mean_ms,
            "cost": f"{row.cost:.8f}",
        }
        for row in rows
    ]
