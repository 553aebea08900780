"""Spending budgets (chat/spend/budgets.py): periods, limits, refusal before anything is stored,
the period's reset, per-person overrides, and what counts as spend; on the in-process
cache (the database decides) and on Redis (a shared counter)."""

from __future__ import annotations

import os
import uuid
import zoneinfo
from datetime import datetime, timedelta
from decimal import Decimal

import httpx2
import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone
from prometheus_client import REGISTRY

from chat.models import Budget, Conversation, Message, ModelPrice
from chat.spend import budgets
from chat.spend.budgets import limit_of
from chat.spend.ledger import ledger_rebuild
from chat.spend.periods import budget_period
from tests import servers
from tests.asgi import AsgiClient
from tests.conftest import REDIS_URL, redis_reachable
from tests.upstream import Reply, chat_script

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
# 10 input tokens at $1000/M and 5 output at $2000/M: two cents a turn.
TURN_COST = Decimal("0.02")
UTC = zoneinfo.ZoneInfo("UTC")


@pytest.fixture
def pricey(transactional_db):
    return ModelPrice.objects.create(
        model="gpt-4.1-mini",
        input_per_million=Decimal("1000"),
        output_per_million=Decimal("2000"),
        valid_from=datetime(2026, 1, 1, tzinfo=UTC),  # newer than any seeded price
    )


@pytest.fixture
def budgeted(settings, upstream, pricey, shared_cache):
    settings.CHAT_BUDGET_USD = Decimal("0.03")
    settings.CHAT_BUDGET_PERIOD = "month"
    upstream.default = Reply(script=chat_script(["ok"], usage=USAGE))
    return upstream


async def rows() -> tuple[int, int]:
    return await Conversation.objects.acount(), await Message.objects.acount()


def assert_budget_refusal(response, *, max_retry_after: int) -> None:
    assert response.status == 429, response.body
    error = response.json()["error"]
    assert error["type"] == "budget_exceeded"
    assert "$0.03 per month" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= max_retry_after


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", "2026-03-11 15:00", "2026-03-11 00:00", "2026-03-12 00:00"),
        ("week", "2026-03-11 15:00", "2026-03-09 00:00", "2026-03-16 00:00"),  # from Monday
        ("week", "2026-03-15 23:59", "2026-03-09 00:00", "2026-03-16 00:00"),
        ("month", "2026-03-11 15:00", "2026-03-01 00:00", "2026-04-01 00:00"),
        ("month", "2026-12-31 23:59", "2026-12-01 00:00", "2027-01-01 00:00"),
        ("month", "2028-02-29 12:00", "2028-02-01 00:00", "2028-03-01 00:00"),
    ],
)
def test_periods_are_calendar_periods_in_the_time_zone(settings, period, now, start, end):
    settings.TIME_ZONE = "America/New_York"
    settings.CHAT_BUDGET_PERIOD = period
    zone = zoneinfo.ZoneInfo("America/New_York")
    local = datetime.fromisoformat(now).replace(tzinfo=zone)
    with timezone.override(zone):
        found = budget_period(local)
    assert found.start == datetime.fromisoformat(start).replace(tzinfo=zone)
    assert found.end == datetime.fromisoformat(end).replace(tzinfo=zone)
    assert found.name == period


def test_a_persons_own_budget_overrides_the_default(settings):
    settings.CHAT_BUDGET_USD = Decimal("5")
    assert limit_of(None) == Decimal("5")
    assert limit_of(Budget(limit_usd=None, unlimited=False)) == Decimal("5")
    assert limit_of(Budget(limit_usd=Decimal("20"))) == Decimal("20")
    assert limit_of(Budget(limit_usd=Decimal("0"))) == Decimal("0")
    assert limit_of(Budget(unlimited=True)) is None
    settings.CHAT_BUDGET_USD = None
    assert limit_of(None) is None
    assert limit_of(Budget(limit_usd=Decimal("1"))) == Decimal("1")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_over_budget_a_new_turn_is_refused_before_anything_is_stored(budgeted):
    ada = await AsgiClient.logged_in("ada")
    for _ in range(2):  # 0.02, then 0.04: over 0.03 only once the second turn is recorded
        assert (await ada.post("/api/chat", {"message": "hi"})).status == 200
    before = await rows()
    refused = await ada.post("/api/chat", {"message": "one more"})
    period = budget_period()
    assert_budget_refusal(refused, max_retry_after=period.seconds_left() + 1)
    assert await rows() == before and budgeted.calls == 2
    # The deferred path (the page's) is refused the same way, before any row.
    deferred = await ada.post("/api/chat?stream=defer", {"message": "later"})
    assert deferred.status == 429 and await rows() == before
    # So are a regenerate and an edit of the last turn, which would call the model again.
    last = await Message.objects.filter(role="assistant").alast()
    regenerate = await ada.post(f"/api/messages/{last.pk}/regenerate", {})
    edit = await ada.post(f"/api/messages/{last.pk - 1}/edit", {"message": "cheaper?"})
    assert_budget_refusal(regenerate, max_retry_after=period.seconds_left() + 1)
    assert_budget_refusal(edit, max_retry_after=period.seconds_left() + 1)
    assert await rows() == before
    assert not await Message.objects.filter(superseded_at__isnull=False).aexists()
    # Someone else's budget is their own.
    bob = await AsgiClient.logged_in("bob")
    assert (await bob.post("/api/chat", {"message": "hi"})).status == 200
    account = (await ada.get("/api/account")).json()["budget"]
    assert account == {
        **account,
        "limit": "0.03",
        "spent": f"{2 * TURN_COST:f}",
        "exceeded": True,
        "period": "month",
    }


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_new_period_opens_the_budget_again(budgeted):
    with time_machine.travel(datetime(2026, 3, 31, 23, 58, tzinfo=UTC), tick=True):
        ada = await AsgiClient.logged_in("ada")
        for _ in range(2):
            assert (await ada.post("/api/chat", {"message": "hi"})).status == 200
        refused = await ada.post("/api/chat", {"message": "again"})
        assert_budget_refusal(refused, max_retry_after=125)
    with time_machine.travel(datetime(2026, 4, 1, 0, 0, 5, tzinfo=UTC), tick=True):
        assert (await ada.post("/api/chat", {"message": "april"})).status == 200
        budget = (await ada.get("/api/account")).json()["budget"]
        assert budget["spent"] == f"{TURN_COST:f}" and not budget["exceeded"]
        assert budget["resets_at"].startswith("2026-05-01T00:00:00")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_own_limits_and_no_limit_take_effect_once_the_admin_saves_them(budgeted):
    ada = await AsgiClient.logged_in("ada")
    user = await get_user_model().objects.aget(username="ada")
    for _ in range(2):
        assert (await ada.post("/api/chat", {"message": "hi"})).status == 200
    assert (await ada.post("/api/chat", {"message": "refused"})).status == 429

    budget = await Budget.objects.acreate(user=user, limit_usd=Decimal("0.10"))
    budgets.budget_forget(user.pk)  # what the admin's save does (tests/test_admin.py)
    assert (await ada.post("/api/chat", {"message": "own limit"})).status == 200

    budget.limit_usd, budget.unlimited = None, True
    await budget.asave()
    budgets.budget_forget(user.pk)
    for _ in range(3):
        assert (await ada.post("/api/chat", {"message": "no limit"})).status == 200
    assert (await ada.get("/api/account")).json()["budget"]["limit"] is None

    budget.unlimited, budget.limit_usd = False, Decimal("0")
    await budget.asave()
    budgets.budget_forget(user.pk)
    assert (await ada.post("/api/chat", {"message": "zero"})).status == 429


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_cancelled_and_failed_turns_with_a_cost_count(settings, transactional_db):
    settings.CHAT_BUDGET_USD = Decimal("1")
    user = await get_user_model().objects.acreate(username="ada")
    other = await get_user_model().objects.acreate(username="bob")
    mine = await Conversation.objects.acreate(owner=user, model="m")
    theirs = await Conversation.objects.acreate(owner=other, model="m")
    now = timezone.now()
    for conversation, status, cost, finished in [
        (mine, Message.Status.COMPLETED, "0.25", now),
        (mine, Message.Status.CANCELLED, "0.50", now),
        (mine, Message.Status.FAILED, "0.125", now),
        (mine, Message.Status.FAILED, None, now),  # failed before any usage
        (mine, Message.Status.STREAMING, None, None),  # not finished: no cost yet
        (mine, Message.Status.COMPLETED, "9", budget_period().start - timedelta(seconds=1)),
        (theirs, Message.Status.COMPLETED, "7", now),
    ]:
        await Message.objects.acreate(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=status,
            cost=None if cost is None else Decimal(cost),
            finished_at=finished,
        )
    # Rows written straight to the table, as history from before the ledger.
    await sync_to_async(ledger_rebuild)()
    status = await budgets.budget_status(user_id=user.pk)
    assert status.spent == Decimal("0.875") and status.limit == Decimal("1")
    assert not status.exceeded


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_redis_keeps_the_sum_between_turns_and_drops_it_at_each(budgeted, shared_cache):
    if shared_cache != "redis":
        pytest.skip("the sum is kept only in a shared cache")
    from django.core.cache import cache

    ada = await AsgiClient.logged_in("ada")
    user = await get_user_model().objects.aget(username="ada")
    key = f"chat:budget:spend:{user.pk}:month:{budget_period().start.date().isoformat()}"
    await ada.get("/api/account")  # read from the database and kept
    assert cache.get(key) == "0"
    assert (await ada.post("/api/chat", {"message": "hi"})).status == 200
    assert cache.get(key) is None  # dropped once the turn was recorded: no double count
    budget = (await ada.get("/api/account")).json()["budget"]
    assert Decimal(budget["spent"]) == TURN_COST and Decimal(cache.get(key)) == TURN_COST


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_deferred_turns_waiting_when_the_budget_is_reached_are_refused(budgeted):
    ada = await AsgiClient.logged_in("ada")
    # Five turns stored while nothing was spent yet; each calls the model only when opened.
    waiting = []
    for i in range(5):
        created = await ada.post("/api/chat?stream=defer", {"message": f"turn {i}"})
        assert created.status == 201, created.body
        waiting.append(created.json()["stream_url"])
    sse = {"accept": "text/event-stream"}
    for url in waiting[:2]:  # 0.02, then 0.04: over 0.03
        assert (await ada.get(url, headers=sse)).status == 200
    refused = await ada.get(waiting[2], headers=sse)
    assert_budget_refusal(refused, max_retry_after=budget_period().seconds_left() + 1)
    assert budgeted.calls == 2
    row = await Message.objects.aget(pk=int(waiting[2].split("/")[3]))
    assert row.status == Message.Status.PENDING  # kept, to be opened after the reset
    # What was already written can still be read back.
    replay = await ada.get(waiting[0], headers=sse)
    assert replay.status == 200 and b"event: end" in replay.body


@pytest.fixture(params=["database", "redis"])
def budget_workers(request, django_db_setup, django_db_blocker, fake_upstream):
    """Two server processes on one database, as `uvicorn --workers 2` runs: sharing only
    the database, or the database and Redis (a fresh key prefix, so no counter of an
    earlier run is seen)."""
    env = servers.fake_model_env(
        fake_upstream, CHAT_ALLOW_ANONYMOUS="false", CHAT_BUDGET_USD="0.05", CHAT_RATE_LIMIT=""
    )
    env.pop("REDIS_URL", None)
    if request.param == "redis":
        if not redis_reachable():
            if os.environ.get("CI"):
                pytest.fail(f"Redis at {REDIS_URL} is not reachable (CI must test it).")
            pytest.skip(f"Redis at {REDIS_URL} is not reachable.")
        env["REDIS_URL"] = REDIS_URL
        env["CHAT_CACHE_PREFIX"] = f"test-budgets-{uuid.uuid4().hex}"
    ports = [servers.free_port(), servers.free_port()]
    procs = [servers.start_worker(env, port) for port in ports]
    yield request.param, [f"http://{servers.HOST}:{port}" for port in ports]
    for proc in procs:
        servers.stop(proc)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_budget_holds_across_two_workers(budget_workers, fake_upstream):
    mode, (first, second) = budget_workers
    # 12 input tokens and 8 output at $1000/M: two cents a turn, on a budget of five.
    await ModelPrice.objects.acreate(
        model="fake-model",
        input_per_million=Decimal("1000"),
        output_per_million=Decimal("1000"),
        valid_from=timezone.now() - timedelta(minutes=1),
    )
    async with httpx2.AsyncClient(timeout=30) as http:
        await http.post(f"{fake_upstream}/_config", json={"ttft_ms": 1, "delay_ms": 1, "tokens": 8})
        await http.post(f"{fake_upstream}/_reset")
        ada = await AsgiClient.logged_in("ada")
        headers = {"Cookie": f"sessionid={ada.cookies['sessionid']}"}

        async def chat(worker: str) -> httpx2.Response:
            return await http.post(f"{worker}/api/chat", json={"message": "hi"}, headers=headers)

        # The second worker reads the budget first (seeding its view of the spend), then
        # every turn is made on the first: the second must still see them all.
        before = (await http.get(f"{second}/api/account", headers=headers)).json()["budget"]
        assert before["spent"] == "0" and before["limit"] == "0.05"
        for _ in range(3):  # 0.02, 0.04, 0.06
            assert (await chat(first)).status_code == 200
        refused = await chat(second)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "budget_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await chat(first)).status_code == 429
        calls = (await http.get(f"{fake_upstream}/_stats")).json()["calls"]
    assert calls == 3
    spent = await budgets.budget_status(user_id=(await ada_user()).pk)
    assert spent.spent == Decimal("0.06"), mode


async def ada_user():
    return await get_user_model().objects.aget(username="ada")


REFUSED = {"type": "budget_exceeded"}


async def in_group(username: str, group_name: str, limit: str | None = None) -> AsgiClient:
    from django.contrib.auth.models import Group

    from chat.models import GroupBudget

    client = await AsgiClient.logged_in(username)
    group, _ = await Group.objects.aget_or_create(name=group_name)
    if limit is not None:
        await GroupBudget.objects.aupdate_or_create(group=group, defaults={"limit_usd": limit})
    user = await get_user_model().objects.aget(username=username)
    await user.groups.aadd(group)
    return client


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_group_budget_caps_its_members_together_and_names_the_group(budgeted, settings):
    settings.CHAT_BUDGET_USD = None  # no personal limit: only the group's
    ada = await in_group("ada", "Research", limit="0.03")
    bob = await in_group("bob", "Research")
    carol = await AsgiClient.logged_in("carol")  # not in the group
    assert (await ada.post("/api/chat", {"message": "hi"})).status == 200  # 0.02
    assert (await bob.post("/api/chat", {"message": "hi"})).status == 200  # 0.04 together
    before = await rows()
    counted = REGISTRY.get_sample_value("chat_limit_refusals_total", REFUSED) or 0
    for member in (ada, bob):
        refused = await member.post("/api/chat", {"message": "more"})
        assert refused.status == 429, refused.body
        error = refused.json()["error"]
        assert error["type"] == "budget_exceeded"
        assert "'Research'" in error["message"] and "$0.03 per month" in error["message"]
    assert await rows() == before and budgeted.calls == 2
    assert REGISTRY.get_sample_value("chat_limit_refusals_total", REFUSED) == counted + 2
    assert (await carol.post("/api/chat", {"message": "hi"})).status == 200
    account = (await ada.get("/api/account")).json()["budget"]
    assert account["limit"] is None and account["exceeded"] is True
    assert account["groups"] == [
        {"name": "Research", "limit": "0.03", "spent": "0.04", "exceeded": True}
    ]
    assert account["spent"] == "0.02"  # her own share


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_account_warns_from_the_warning_share(budgeted, settings):
    settings.CHAT_BUDGET_USD = Decimal("0.025")
    settings.CHAT_BUDGET_WARN_PERCENT = 80
    ada = await AsgiClient.logged_in("ada")
    account = (await ada.get("/api/account")).json()["budget"]
    assert (account["warning"], account["warn_percent"]) == (False, 80)
    assert (await ada.post("/api/chat", {"message": "hi"})).status == 200  # 0.02 of 0.025
    account = (await ada.get("/api/account")).json()["budget"]
    assert (account["warning"], account["exceeded"]) == (True, False)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_budget_check_reads_the_ledger_not_the_messages(budgeted, settings):
    """The check's queries touch the ledger (a few rows per person per day), never the
    message table, however many messages there are."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.CHAT_BUDGET_USD = Decimal("5")
    ada = await in_group("ada", "Research", limit="10")
    assert (await ada.post("/api/chat", {"message": "hi"})).status == 200
    user = await get_user_model().objects.aget(username="ada")

    def check() -> list[str]:
        from asgiref.sync import async_to_sync

        with CaptureQueriesContext(connection) as queries:
            async_to_sync(budgets.budget_check)(user_id=user.pk)
        return [q["sql"] for q in queries.captured_queries]

    sqls = await sync_to_async(check, thread_sensitive=False)()
    spend = [sql for sql in sqls if "SUM" in sql.upper()]
    assert spend and all("chat_dailyusage" in sql for sql in spend)
    assert not any("chat_message" in sql for sql in sqls)
