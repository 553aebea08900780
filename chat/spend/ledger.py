"""The usage ledger (`DailyUsage`): per day, person, model, provider and API, the sums of
the assistant messages that reached a final status.

Every path that gives a message its final status calls `ledger_record` in the same
transaction, after the row's own update, so a turn is counted exactly when its row is
finished: once, or (rolled back together) not at all. A cost recomputed later moves the
difference (`ledger_move_cost`); conversations adopted at sign-in move theirs to the
account (`ledger_adopt`). Nothing ever subtracts for deleted or purged text.

Each key is written with one upsert that adds to what is there, and a transaction writes
its keys in one fixed order, so concurrent turns never deadlock on PostgreSQL.
`ledger_verify` and `ledger_rebuild` compare and refill the ledger from the rows
(`manage.py chat_ledger`); migration 0008 fills it the same way.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from django.contrib.auth import get_user_model
from django.db import connection, models, transaction
from django.db.models import BigIntegerField, Count, F, Q, QuerySet, Sum
from django.db.models.functions import Cast, Coalesce, Round, TruncDate
from django.utils import timezone

from chat.models import TTFT_BUCKETS_MS, TTFT_FIELDS, DailyUsage, Message

E8 = 10**8
FINAL = [str(s) for s in Message.FINAL_STATUSES]
OUTCOMES = ("completed", "incomplete", "failed", "cancelled")
KEY_FIELDS = ("day", "user_id", "anonymous_key", "model", "provider", "api")
AMOUNT_FIELDS = (
    "requests",
    *OUTCOMES,
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated",
    "cost_e8",
    *TTFT_FIELDS,
)
# What `_amounts_of` reads from a message row (with its conversation's owner).
MESSAGE_VALUES = (
    "pk",
    "status",
    "model",
    "provider",
    "api",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "usage_estimated",
    "ttft_ms",
    "cost",
    "finished_at",
    "created_at",
    "conversation__owner_id",
    "conversation__anonymous_key",
)


@dataclass(frozen=True, slots=True, order=True)
class LedgerKey:
    day: date
    user_id: int
    anonymous_key: str
    model: str
    provider: str
    api: str

    def label(self) -> str:
        who = f"user {self.user_id}" if self.user_id else f"anonymous {self.anonymous_key[:8]}…"
        return f"{self.day} {who} {self.model or '-'} {self.provider or '-'}/{self.api or '-'}"


Changes = dict[LedgerKey, Counter[str]]


class Keyed(Protocol):
    """A ledger's key: ordered, and named in a difference."""

    def label(self) -> str: ...

    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=Keyed)
L = TypeVar("L", bound=models.Model)


def ledger_day(moment: datetime) -> date:
    """The ledger's day of a moment: its date in `TIME_ZONE` (never a per-request zone)."""
    return timezone.localdate(moment, timezone.get_default_timezone())


def cost_e8(cost: Decimal | float | None) -> int:
    """A stored cost in hundred-millionths of a dollar (exact: costs have 8 places)."""
    return 0 if cost is None else int((Decimal(cost) * E8).to_integral_value())


def ttft_field(ttft_ms: int) -> str:
    """The histogram column that counts a time to first token."""
    for edge, field in zip(TTFT_BUCKETS_MS, TTFT_FIELDS, strict=False):
        if ttft_ms <= edge:
            return field
    return TTFT_FIELDS[-1]


def _key_of(row: dict[str, Any], day: date) -> LedgerKey:
    user_id = row["conversation__owner_id"] or 0
    return LedgerKey(
        day=day,
        user_id=user_id,
        anonymous_key="" if user_id else row["conversation__anonymous_key"],
        model=row["model"],
        provider=row["provider"],
        api=row["api"],
    )


def _amounts_of(row: dict[str, Any]) -> Counter[str]:
    amounts: Counter[str] = Counter(requests=1)
    amounts[str(row["status"])] += 1
    for field in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        amounts[field] += row[field] or 0
    amounts["estimated"] += 1 if row["usage_estimated"] else 0
    amounts["cost_e8"] += cost_e8(row["cost"])
    if row["ttft_ms"] is not None:
        amounts[ttft_field(row["ttft_ms"])] += 1
    return amounts


def _changes_of(rows: Iterable[dict[str, Any]]) -> Changes:
    changes: Changes = {}
    for row in rows:
        key = _key_of(row, ledger_day(row["finished_at"] or row["created_at"]))
        changes.setdefault(key, Counter()).update(_amounts_of(row))
    return changes


def ledger_record(message_ids: list[int]) -> None:
    """Count messages that were just given their final status, in the caller's
    transaction (after the rows' own update, so their owner is read as it is now)."""
    if not message_ids:
        return
    rows = Message.objects.filter(pk__in=message_ids, status__in=FINAL).values(*MESSAGE_VALUES)
    ledger_add(_changes_of(rows))


def ledger_move_cost(moves: Iterable[tuple[dict[str, Any], Decimal | None]]) -> None:
    """Costs recomputed: each `(row values before, new cost)` moves the difference."""
    changes: Changes = {}
    for row, new_cost in moves:
        if row["status"] not in FINAL:
            continue  # counted when it finishes, with the cost it has then
        key = _key_of(row, ledger_day(row["finished_at"] or row["created_at"]))
        delta = cost_e8(new_cost) - cost_e8(row["cost"])
        changes.setdefault(key, Counter())["cost_e8"] += delta
    ledger_add(changes)


def ledger_adopt(*, anonymous_key: str, user_id: int, conversation_ids: list[Any]) -> None:
    """An anonymous visitor's conversations became an account's: so does their usage."""
    rows = Message.objects.filter(
        conversation_id__in=conversation_ids, role=Message.Role.ASSISTANT, status__in=FINAL
    ).values(*MESSAGE_VALUES)
    changes: Changes = {}
    for row in rows:
        day = ledger_day(row["finished_at"] or row["created_at"])
        amounts = _amounts_of(row)
        # Read after the conversations moved: the key they were counted under is rebuilt.
        come = _key_of(row, day)
        gone = dataclasses.replace(come, user_id=0, anonymous_key=anonymous_key)
        changes.setdefault(gone, Counter()).subtract(amounts)
        changes.setdefault(come, Counter()).update(amounts)
    ledger_add(changes)


def ledger_add(changes: Changes) -> None:
    """Add `changes` to the ledger: one upsert per key, keys in sorted order."""
    table = connection.ops.quote_name(DailyUsage._meta.db_table)
    columns = [*KEY_FIELDS, *AMOUNT_FIELDS]
    quoted = [connection.ops.quote_name(c) for c in columns]
    sql = (
        f"INSERT INTO {table} ({', '.join(quoted)}) VALUES ({', '.join(['%s'] * len(quoted))}) "
        f"ON CONFLICT ({', '.join(quoted[: len(KEY_FIELDS)])}) DO UPDATE SET "
        + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in quoted[len(KEY_FIELDS) :])
    )
    with connection.cursor() as cursor:
        for key in sorted(changes):
            amounts = changes[key]
            if not any(amounts.values()):
                continue
            cursor.execute(
                sql,
                [
                    connection.ops.adapt_datefield_value(key.day),
                    key.user_id,
                    key.anonymous_key,
                    key.model,
                    key.provider,
                    key.api,
                    *(amounts[field] for field in AMOUNT_FIELDS),
                ],
            )


# --- Proof and repair -----------------------------------------------------------------


def replies_in_days(since: date | None, until: date | None) -> Q:
    """Final assistant messages whose ledger day is in [since, until] (inclusive)."""
    query = Q(role=Message.Role.ASSISTANT, status__in=FINAL)
    zone = timezone.get_default_timezone()
    if since is not None:
        start = timezone.make_aware(datetime.combine(since, datetime.min.time()), zone)
        query &= Q(finished_at__gte=start) | Q(finished_at__isnull=True, created_at__gte=start)
    if until is not None:
        after = datetime.combine(until + timedelta(days=1), datetime.min.time())
        end = timezone.make_aware(after, zone)
        query &= Q(finished_at__lt=end) | Q(finished_at__isnull=True, created_at__lt=end)
    return query


def _sums() -> dict[str, Any]:
    """The ledger's amounts as SQL aggregates over messages."""
    sums: dict[str, Any] = {"requests": Count("pk")}
    for outcome in OUTCOMES:
        sums[outcome] = Count("pk", filter=Q(status=outcome))
    for field in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        sums[field] = Sum(field, default=0)
    sums["estimated"] = Count("pk", filter=Q(usage_estimated=True))
    # Costs have 8 places; rounding after scaling makes SQLite's float arithmetic exact.
    sums["cost_e8"] = Sum(Cast(Round(F("cost") * E8), BigIntegerField()), default=0)
    lower = -1
    for edge, field in zip(TTFT_BUCKETS_MS, TTFT_FIELDS, strict=False):
        sums[field] = Count("pk", filter=Q(ttft_ms__gt=lower, ttft_ms__lte=edge))
        lower = edge
    sums[TTFT_FIELDS[-1]] = Count("pk", filter=Q(ttft_ms__gt=lower))
    return sums


def rows_totals(
    *, since: date | None = None, until: date | None = None, messages: Any = None
) -> Changes:
    """What the ledger should hold for [since, until], summed from the message rows by
    the database (grouped by day in `TIME_ZONE`, owner, model, provider and API)."""
    manager = messages if messages is not None else Message.objects
    grouped = (
        manager.filter(replies_in_days(since, until))
        .annotate(
            ledger_day=TruncDate(
                Coalesce(F("finished_at"), F("created_at")),
                tzinfo=timezone.get_default_timezone(),
            )
        )
        .values(
            "ledger_day",
            "conversation__owner_id",
            "conversation__anonymous_key",
            "model",
            "provider",
            "api",
        )
        .annotate(**_sums())
        .order_by()
    )
    totals: Changes = {}
    for row in grouped:
        key = _key_of(row, row["ledger_day"])
        totals.setdefault(key, Counter()).update(
            {field: int(row[field] or 0) for field in AMOUNT_FIELDS}
        )
    return totals


def ledger_rows_in_days(rows: QuerySet[L], since: date | None, until: date | None) -> QuerySet[L]:
    """A ledger's rows for the days [since, until] (either end open when None)."""
    if since is not None:
        rows = rows.filter(day__gte=since)
    if until is not None:
        rows = rows.filter(day__lte=until)
    return rows


def ledger_totals(*, since: date | None = None, until: date | None = None) -> Changes:
    totals: Changes = {}
    rows = ledger_rows_in_days(DailyUsage.objects.all(), since, until)
    for row in rows.values(*KEY_FIELDS, *AMOUNT_FIELDS):
        key = LedgerKey(**{field: row[field] for field in KEY_FIELDS})
        totals[key] = Counter({field: row[field] for field in AMOUNT_FIELDS})
    return totals


@dataclass(frozen=True, slots=True)
class Difference:
    key: Keyed
    ledger: dict[str, int]
    rows: dict[str, int]

    def describe(self) -> str:
        fields = sorted(set(self.ledger) | set(self.rows))
        parts = [
            f"{f} ledger={self.ledger.get(f, 0)} rows={self.rows.get(f, 0)}"
            for f in fields
            if self.ledger.get(f, 0) != self.rows.get(f, 0)
        ]
        return f"{self.key.label()}: {', '.join(parts)}"


def _people_gone(user_ids: Iterable[int]) -> set[int]:
    wanted = {u for u in user_ids if u}
    present = set(get_user_model().objects.filter(pk__in=wanted).values_list("pk", flat=True))
    return wanted - present


def ledger_verify(*, since: date | None = None, until: date | None = None) -> list[Difference]:
    """Keys where the ledger and the rows disagree, in key order. Spend of people whose
    accounts were deleted since (their rows went with them) is the ledger's alone."""
    ledger = ledger_totals(since=since, until=until)
    rows = rows_totals(since=since, until=until)
    gone = _people_gone(key.user_id for key in ledger)
    return ledger_differences(ledger, rows, skip=lambda key: key.user_id in gone)


def ledger_differences(
    ledger: dict[K, Counter[str]],
    rows: dict[K, Counter[str]],
    *,
    skip: Callable[[K], bool] = lambda key: False,
) -> list[Difference]:
    """The keys (but those to `skip`) whose non-zero amounts differ, in key order."""
    differences = []
    for key in sorted(set(ledger) | set(rows)):
        if skip(key):
            continue
        have = {f: v for f, v in ledger.get(key, Counter()).items() if v}
        want = {f: v for f, v in rows.get(key, Counter()).items() if v}
        if have != want:
            differences.append(Difference(key=key, ledger=have, rows=want))
    return differences


def ledger_rebuild(*, since: date | None = None, until: date | None = None) -> int:
    """Refill [since, until] from the rows, in one transaction; returns the keys written.
    Rows of deleted accounts are kept (their messages are gone, their spend is not)."""
    with transaction.atomic():
        existing = ledger_rows_in_days(DailyUsage.objects.all(), since, until)
        users = set(existing.values_list("user_id", flat=True).distinct())
        gone = _people_gone(users)
        existing.exclude(user_id__in=gone).delete()
        totals = rows_totals(since=since, until=until)
        ledger_add(totals)
        return len(totals)


def ledger_backfill(
    messages: models.Manager[Any], *, batch: int = 50_000, progress: Callable[[str], None]
) -> int:
    """Fill an empty ledger from existing rows (migration 0008), `batch` message ids at a
    time so no transaction or lock lasts long; returns how many messages were counted."""
    bounds = messages.aggregate(low=models.Min("pk"), high=models.Max("pk"))
    if bounds["low"] is None:
        return 0
    counted = 0
    for low in _steps(bounds["low"], bounds["high"], batch):
        chunk = messages.filter(pk__gte=low, pk__lt=low + batch)
        with transaction.atomic():
            totals = rows_totals(messages=chunk)
            ledger_add(totals)
        counted += sum(amounts["requests"] for amounts in totals.values())
        last = min(low + batch - 1, bounds["high"])
        progress(f"  usage ledger: message ids to {last} of {bounds['high']}, {counted} replies")
    return counted


def _steps(low: int, high: int, step: int) -> Iterator[int]:
    while low <= high:
        yield low
        low += step


def message_finalize(
    message_id: int, *, unfinished: Iterable[str] = Message.UNFINISHED_STATUSES, **fields: Any
) -> bool:
    """Give a message its final status (`fields`) unless it has one already, and count it
    in the ledger in the same transaction. The way every path but the batched finish of
    a streamed turn (which does the same for many at once) ends a turn."""
    with transaction.atomic():
        written = Message.objects.filter(pk=message_id, status__in=list(unfinished)).update(
            **fields
        )
        if written:
            ledger_record([message_id])
    return bool(written)
