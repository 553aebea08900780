"""The database settings: on SQLite, WAL, IMMEDIATE transactions and the busy timeout are
all a burst needs. A worker writes turn starts and finishes from one thread and claims from
the chat thread; admin pages write from threads of their own. No lock of ours queues them,
and none of a burst's writes may fail with "database is locked"."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from chat.models import Message, ModelPrice
from tests.asgi import AsgiClient, parse_sse

BURST = 120


def admin_edits_a_price(n: int) -> None:
    # As the admin's change form does: one transaction, on the page request's thread.
    with transaction.atomic():
        ModelPrice.objects.create(
            model=f"edited-{n}",
            input_per_million=Decimal("1"),
            output_per_million=Decimal("2"),
            valid_from=timezone.now(),
        )


async def page_request_writing(n: int) -> None:
    async with ThreadSensitiveContext():  # a page's own thread, as Django gives it
        await sync_to_async(admin_edits_a_price)(n)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_turns_beside_admin_writes_never_sees_database_is_locked(caplog):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's single writer is what this is about")
    caplog.set_level(logging.WARNING)
    visitors = [AsgiClient() for _ in range(BURST)]  # each its own anonymous cookie
    starts = [
        visitor.post("/api/chat?stream=defer", {"message": f"question {n}"})
        for n, visitor in enumerate(visitors)
    ]
    edits = [page_request_writing(n) for n in range(20)]
    started = await asyncio.gather(*starts, *edits[:10])
    started = started[:BURST]
    assert [r.status for r in started] == [201] * BURST, [
        r.body for r in started if r.status != 201
    ]

    streams = [
        visitor.get(r.json()["stream_url"], headers={"accept": "text/event-stream"})
        for visitor, r in zip(visitors, started, strict=True)
    ]
    streamed = await asyncio.gather(*streams, *edits[10:])
    for result in streamed[:BURST]:
        assert result.status == 200
        assert parse_sse(result.body)[-1][0] == "end", result.body[-300:]

    assert "database is locked" not in caplog.text
    statuses = [
        s async for s in Message.objects.filter(role="assistant").values_list("status", flat=True)
    ]
    assert statuses == ["completed"] * BURST
    assert await ModelPrice.objects.filter(model__startswith="edited-").acount() == 20


@pytest.mark.django_db
def test_postgresql_plans_without_jit():
    """JIT compiles for a quarter of a second whenever an estimate is large (an admin list
    with per-row totals), to read a handful of rows: it is off for our connections."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's setting")
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"
