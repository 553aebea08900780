"""Realistic stored turns for the admin and usage tests: several users and anonymous
visitors, several models, every final status, spread over the last days."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.utils import timezone

from chat.models import TTFT_BUCKETS_MS, Conversation, Message
from chat.spend.ledger import ledger_rebuild


@dataclass(frozen=True)
class Turn:
    owner: str | None  # None: an anonymous visitor
    model: str
    days_ago: int
    status: str = "completed"
    input_tokens: int | None = 100
    output_tokens: int | None = 50
    cost: str | None = "0.00010000"
    ttft_ms: int | None = 300
    error_type: str = ""
    title: str = "A chat"
    reply: str = "Hello there"


TURNS = [
    Turn(
        "alice",
        "gpt-4.1-mini",
        0,
        input_tokens=120,
        output_tokens=80,
        cost="0.00017600",
        ttft_ms=210,
    ),
    Turn(
        "alice",
        "gpt-4.1-mini",
        0,
        input_tokens=40,
        output_tokens=10,
        cost="0.00003200",
        ttft_ms=420,
    ),
    Turn(
        "alice", "gpt-4.1", 1, input_tokens=900, output_tokens=300, cost="0.00420000", ttft_ms=650
    ),
    Turn("alice", "gpt-4.1", 1, "failed", None, None, None, None, "rate_limit", "Rate limited"),
    Turn(
        "bob",
        "gpt-5-mini",
        2,
        input_tokens=500,
        output_tokens=1500,
        cost="0.00312500",
        ttft_ms=1900,
    ),
    Turn("bob", "gpt-5-mini", 2, "cancelled", 60, 20, "0.00005500", 800, title="Stopped early"),
    Turn("bob", "gpt-4.1-mini", 3, "incomplete", 30, 4000, "0.00641200", 350),
    Turn(
        "bob", "gpt-4.1-mini", 5, "failed", None, None, None, None, "timeout", "=cmd|' /C calc'!A0"
    ),
    Turn(None, "offline-demo", 0, input_tokens=12, output_tokens=40, cost="0", ttft_ms=25),
    Turn(None, "offline-demo", 4, input_tokens=15, output_tokens=44, cost="0", ttft_ms=31),
    Turn(None, "gpt-4.1-mini", 6, "failed", 10, 0, "0.00000400", None, "upstream_error"),
    # Outside the default 7-day period: only a 30-day report sees these.
    Turn(
        "carol", "gpt-4.1", 12, input_tokens=2000, output_tokens=700, cost="0.00960000", ttft_ms=700
    ),
    Turn("alice", "o3", 20, input_tokens=3000, output_tokens=5000, cost="0.04600000", ttft_ms=5200),
]


def noon(days_ago: int) -> datetime:
    """Noon, local time, so a row never straddles a day boundary whenever the test runs."""
    day = timezone.localdate() - timedelta(days=days_ago)
    return timezone.make_aware(datetime.combine(day, time(12)))


_anonymous_keys = itertools.count(1)


def create_turns(turns: list[Turn] = TURNS) -> list[Message]:
    """One conversation per turn: the user's message, then the assistant's reply."""
    users = {}
    replies = []
    for index, turn in enumerate(turns):
        owner = None
        if turn.owner:
            if turn.owner not in users:
                users[turn.owner] = get_user_model().objects.get_or_create(username=turn.owner)[0]
            owner = users[turn.owner]
        conversation = Conversation.objects.create(
            owner=owner,
            anonymous_key="" if owner else f"anon-{next(_anonymous_keys)}",
            title=f"{turn.title} {index}",
            model=turn.model,
        )
        at = noon(turn.days_ago) + timedelta(minutes=index)
        Message.objects.create(conversation=conversation, role="user", content=f"Question {index}")
        reply = Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=turn.reply if turn.status != "failed" else "",
            status=turn.status,
            provider="openai" if turn.model != "offline-demo" else "demo",
            api="responses",
            model=turn.model,
            input_tokens=turn.input_tokens,
            output_tokens=turn.output_tokens,
            total_tokens=None
            if turn.input_tokens is None
            else turn.input_tokens + (turn.output_tokens or 0),
            cost=None if turn.cost is None else Decimal(turn.cost),
            ttft_ms=turn.ttft_ms,
            duration_ms=None if turn.ttft_ms is None else turn.ttft_ms + 900,
            error_type=turn.error_type,
            error_message=turn.reply if turn.error_type else "",
            usage_estimated=turn.status == "cancelled",
        )
        # created_at is auto_now_add: move the rows to the turn's day afterwards.
        Message.objects.filter(conversation=conversation).update(created_at=at, finished_at=at)
        Conversation.objects.filter(pk=conversation.pk).update(created_at=at, updated_at=at)
        replies.append(reply)
    # Rows written straight to the table, as history from before the ledger: fill it the
    # way migration 0009 does for an existing database.
    ledger_rebuild()
    return replies


def many_turns(count: int) -> list[Turn]:
    models = ["gpt-4.1-mini", "gpt-4.1", "gpt-5-mini", "offline-demo"]
    owners = ["alice", "bob", "carol", None]
    statuses = ["completed", "failed", "cancelled", "incomplete"]
    return [
        Turn(owners[n % 4], models[n % 3], n % 7, statuses[n % 4], ttft_ms=100 + n)
        for n in range(count)
    ]


def expected(turns: list[Turn], *, days: int, by: str) -> dict[str, dict]:
    """The numbers computed by hand from the specs, without the ORM."""
    groups: dict[str, list[Turn]] = defaultdict(list)
    for turn in turns:
        if turn.days_ago >= days:
            continue
        key = {
            "day": (timezone.localdate() - timedelta(days=turn.days_ago)).isoformat(),
            "model": turn.model,
            "user": turn.owner or "anonymous",
            "total": "total",
        }[by]
        groups[key].append(turn)
    return {key: summarise(group) for key, group in groups.items()}


def summarise(turns: list[Turn]) -> dict:
    ttfts = sorted(t.ttft_ms for t in turns if t.ttft_ms is not None)
    return {
        "requests": len(turns),
        "failed": sum(t.status == "failed" for t in turns),
        "input_tokens": sum(t.input_tokens or 0 for t in turns),
        "output_tokens": sum(t.output_tokens or 0 for t in turns),
        "cost": sum((Decimal(t.cost) for t in turns if t.cost), Decimal(0)),
        "median": statistics.median(ttfts) if ttfts else None,
        "p95": p95(ttfts),
        "ttfts": ttfts,
    }


def p95(values: list[int]) -> float | None:
    if len(values) < 2:
        return float(values[0]) if values else None
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def edges_around(value: float) -> tuple[float, float]:
    """The ledger bucket a time to first token falls in, as (lower, upper) edges."""
    lower = 0.0
    for edge in TTFT_BUCKETS_MS:
        if value <= edge:
            return lower, float(edge)
        lower = float(edge)
    return lower, lower


def assert_in_buckets(estimate: float | None, ttfts: list[int], fraction: float) -> None:
    """A percentile read from the histogram lies within the buckets of the two samples
    the exact percentile falls between."""
    if not ttfts:
        assert estimate is None
        return
    position = (len(ttfts) - 1) * fraction
    low, high = ttfts[math.floor(position)], ttfts[math.ceil(position)]
    assert estimate is not None
    assert edges_around(low)[0] <= estimate <= edges_around(high)[1], (estimate, ttfts)
