"""Usage review at scale, as a deterministic cost: the work SQLite does to load each admin
page, the dashboard and a budget check (counted in virtual-machine instructions, not
timed) must not grow with the number of stored messages, and none counts a whole table.
Ten times the messages may cost a page at most 1.5 times the work; a page that counted,
grouped or searched the whole message table would cost ten times as much. (The bench's
`ledger` scenario times the same pages at a million messages.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bench.seed import COMMON_WORD, RARE_WORD, seed_history
from chat.admin import lists
from chat.spend import budgets

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "sqlite", reason="counts SQLite's virtual-machine instructions"
    ),
]

GROWTH_LIMIT = 1.5
# Hundreds of instructions: below this a page's database work is negligible (a few
# thousand rows of the ledger or of one conversation), whatever its growth.
FLOOR = 100
MESSAGES = reverse("admin:chat_message_changelist")
CONVERSATIONS = reverse("admin:chat_conversation_changelist")
DASHBOARD = reverse("admin:chat_message_usage")


LARGE_TABLES = ("chat_message", "chat_conversation")


def unbounded_counts(load: Callable[[], object]) -> list[str]:
    """Queries `load` runs that count or de-duplicate a large table without a bound
    (SQLite counts a table in one instruction, so `work` cannot see these)."""
    with CaptureQueriesContext(connection) as queries:
        load()
    found = []
    for query in queries.captured_queries:
        sql = query["sql"].upper()
        large = any(f'FROM "{table.upper()}"' in sql for table in LARGE_TABLES)
        # The statement itself counts or de-duplicates (a count in a correlated subquery
        # is per listed row, which `work` measures).
        counting = sql.startswith(("SELECT COUNT(", "SELECT DISTINCT"))
        if large and counting and "LIMIT" not in sql:
            found.append(query["sql"])
    return found


def work(load: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions (in hundreds) `load` makes this connection run."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0  # go on

    connection.ensure_connection()
    raw = connection.connection
    raw.set_progress_handler(tick, 100)
    try:
        load()
    finally:
        raw.set_progress_handler(None, 0)
    return counted[0]


def test_usage_review_costs_the_same_at_ten_times_the_messages(admin_client, monkeypatch):
    # Counting stops early here, so both sizes are past it, as a real table is.
    monkeypatch.setattr(lists, "EXACT_COUNT_LIMIT", 300)
    # Ten messages a conversation: more than a page of conversations at either size; five
    # people and two models every day, so the ledger has the same keys at both sizes.
    shape = {"days": 10, "models": ("gpt-4.1", "o3")}
    people = seed_history(messages=2_000, people=5, conversations=200, **shape)
    month = timezone.localdate().strftime("%Y-%m")
    pages = {
        "message list": MESSAGES,
        "messages by model": f"{MESSAGES}?model=gpt-4.1",
        "messages by status": f"{MESSAGES}?status__exact=failed",
        "messages by provider": f"{MESSAGES}?provider=openai",
        "messages by API": f"{MESSAGES}?api=responses",
        "messages estimated": f"{MESSAGES}?usage_estimated__exact=1",
        "earlier versions": f"{MESSAGES}?version=earlier",
        "messages in a month": f"{MESSAGES}?created_at_month={month}",
        "message search": f"{MESSAGES}?q={RARE_WORD}",
        # Newest matches first, read from the index until the page is full.
        "message search, common word": f"{MESSAGES}?q={COMMON_WORD}",
        "message search, common word, by model": f"{MESSAGES}?q={COMMON_WORD}&model=o3",
        "conversation list": CONVERSATIONS,
        "conversations by model": f"{CONVERSATIONS}?model=gpt-4.1",
        "conversation search": f"{CONVERSATIONS}?q={RARE_WORD}",
        "people": reverse("admin:auth_user_changelist"),
        "dashboard 7 days": f"{DASHBOARD}?period=7d",
        "dashboard 90 days": f"{DASHBOARD}?period=90d",
        "usage CSV by user": reverse("admin:chat_message_usage_csv") + "?period=90d&by=user",
    }

    def measure() -> dict[str, int]:
        costs = {}
        for name, url in pages.items():

            def load(url: str = url) -> None:
                response = admin_client.get(url)
                assert response.status_code == 200, (url, response.status_code)
                if response.streaming:
                    b"".join(response.streaming_content)

            load()  # warm: the first load fills the caches the others reuse
            assert not unbounded_counts(load), name
            costs[name] = work(load)
        costs["budget check"] = work(
            lambda: async_to_sync(budgets.budget_status)(user_id=people[0])
        )
        return costs

    small = measure()
    seed_history(messages=18_000, conversations=1_800, owners=people, **shape)
    large = measure()
    grown = {
        name: round(large[name] / max(small[name], 1), 2)
        for name in small
        if large[name] > GROWTH_LIMIT * max(small[name], FLOOR)
    }
    assert not grown, f"work grew with the messages (×, at 10× the rows): {grown}; {large=}"
