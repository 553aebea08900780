"""The usage ledger (chat/spend/ledger.py) equals the message rows whatever happens to the
turns: Hypothesis plays random sequences of real turns through the ASGI app (completed,
failed, cut off, disconnected, deferred and resumed, cancelled, regenerated, recosted,
deleted, purged, expired, adopted, calling a priced tool) and neither `ledger_verify` nor
`tool_calls_verify` may find anything; then each rule
on its own, the `chat_ledger` command and the migration's backfill."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chat.access.owners import conversations_adopt
from chat.conversations import conversations_purge
from chat.models import Conversation, DailyToolUsage, DailyUsage, Message, ModelPrice, ToolPrice
from chat.spend.ledger import E8, ledger_backfill, ledger_rebuild, ledger_verify, rows_totals
from chat.spend.prices import messages_recost, prices_forget
from chat.spend.tool_calls import tool_calls_verify
from chat.turns import turns_expire_stale
from tests.asgi import AsgiClient, parse_sse
from tests.test_tool_turns import ADD, chat_round
from tests.upstream import Reply, chat_script

pytestmark = pytest.mark.django_db(transaction=True)

SSE = {"accept": "text/event-stream"}
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
OPERATIONS = [
    "completed",
    "failed",
    "cut",
    "disconnected",
    "resumed",
    "cancelled",
    "regenerated",
    "recosted",
    "deleted",
    "purged",
    "expired",
    "adopted",
    "tooled",
]
WHO = ["ada", "bob", "visitor"]


class World:
    """The people playing, their clients, and the last conversation each one used."""

    def __init__(self, upstream) -> None:
        self.upstream = upstream
        self.clients: dict[str, AsgiClient] = {}
        self.last: dict[str, dict] = {}
        self.price_step = 0

    async def client(self, who: str) -> AsgiClient:
        if who not in self.clients:
            if who == "visitor":
                self.clients[who] = AsgiClient()
            else:
                user = await get_user_model().objects.filter(username=who).afirst()
                if user is None:
                    self.clients[who] = await AsgiClient.logged_in(who)
                else:  # a later Hypothesis example: the account exists
                    self.clients[who] = await _session_of(user)
        return self.clients[who]

    def answers(self, reply: Reply) -> None:
        self.upstream.queue(reply)

    async def say(self, who: str, **kwargs) -> list[tuple[str, dict]]:
        client = await self.client(who)
        body = {"message": f"question from {who}"}
        if who in self.last:
            body["conversation"] = self.last[who]["conversation"]
        response = await client.post("/api/chat", body, headers=SSE, **kwargs)
        events = parse_sse(response.body)
        if events and events[0][0] == "start":
            self.last[who] = events[0][1]
        else:
            self.last.pop(who, None)  # refused (deleted conversation): start another
        return events

    async def defer(self, who: str) -> dict | None:
        client = await self.client(who)
        body = {"message": "later"}
        if who in self.last:
            body["conversation"] = self.last[who]["conversation"]
        response = await client.post("/api/chat?stream=defer", body)
        if response.status != 201:
            self.last.pop(who, None)
            return None
        self.last[who] = response.json()
        return response.json()


async def _session_of(user) -> AsgiClient:
    from django.test import Client

    session = Client()
    await session.aforce_login(user)
    client = AsgiClient()
    client.cookies["sessionid"] = session.cookies["sessionid"].value
    return client


def ok_reply() -> Reply:
    return Reply(script=chat_script(["Hello", " there"], usage=USAGE))


async def play(world: World, operation: str, who: str) -> None:
    if operation == "completed":
        world.answers(ok_reply())
        await world.say(who)
    elif operation == "failed":
        world.answers(Reply(status=500, json_body={"error": {"message": "boom"}}))
        await world.say(who)
    elif operation == "cut":  # the stream stops before its finish and usage chunks
        world.answers(Reply(script=chat_script(["Half", " a", " reply"])[:3]))
        await world.say(who)
    elif operation == "disconnected":  # the browser leaves mid-reply
        world.answers(Reply(script=[*chat_script(["a"] * 5, usage=USAGE)[:3], 0.05, 0.05]))
        await world.say(who, disconnect_after_chunks=2)
    elif operation == "resumed":
        world.answers(ok_reply())
        if (info := await world.defer(who)) is not None:
            client = await world.client(who)
            await client.get(info["stream_url"], headers=SSE, disconnect_after_chunks=2)
            await client.get(info["stream_url"], headers=SSE)
            await client.get(info["stream_url"], headers=SSE)
    elif operation == "cancelled":
        if (info := await world.defer(who)) is not None:
            client = await world.client(who)
            await client.post(f"/api/messages/{info['message']}/cancel", {})
            await client.post(f"/api/messages/{info['message']}/cancel", {})
    elif operation == "regenerated":
        if who in world.last:
            client = await world.client(who)
            created = await client.post(
                f"/api/messages/{world.last[who]['message']}/regenerate", {}
            )
            if created.status == 201:
                world.answers(ok_reply())
                await client.get(created.json()["stream_url"], headers=SSE)
    elif operation == "recosted":
        world.price_step += 1
        await ModelPrice.objects.acreate(
            model="gpt-4.1-mini",
            input_per_million=Decimal("0.40") * world.price_step,
            output_per_million=Decimal("1.60") + world.price_step,
            valid_from=timezone.now() - timedelta(days=2, seconds=world.price_step),
        )
        await sync_to_async(messages_recost)(messages=Message.objects.all())
    elif operation == "deleted":
        if who in world.last:
            client = await world.client(who)
            await client.request("DELETE", f"/api/conversations/{world.last[who]['conversation']}")
    elif operation == "purged":
        await sync_to_async(conversations_purge)(deleted_before=timezone.now() + timedelta(1))
    elif operation == "expired":
        await world.defer(who)  # never opened: the sweep ends it
        await sync_to_async(turns_expire_stale)(older_than=timedelta(0))
    elif operation == "tooled":  # two model calls, a priced tool call between them
        world.answers(chat_round([], n=1, calls=[ADD]))
        world.answers(chat_round(["5"], n=2))
        await world.say(who)
    elif operation == "adopted":
        visitor = await world.client("visitor")
        world.answers(ok_reply())
        await world.say("visitor")
        key = (
            await Conversation.objects.filter(owner__isnull=True)
            .values_list("anonymous_key", flat=True)
            .alast()
        )
        user = await get_user_model().objects.filter(username=who).afirst()
        if key and user is not None:
            await sync_to_async(conversations_adopt)(anonymous_key=key, user_id=user.pk)
            world.last.pop("visitor", None)
            visitor.cookies.clear()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.tuples(st.sampled_from(OPERATIONS), st.sampled_from(WHO)), max_size=10))
@example(steps=[("tooled", "ada"), ("recosted", "bob"), ("deleted", "ada"), ("purged", "bob")])
def test_the_ledger_equals_the_rows_whatever_happens(steps, upstream, mini_price_now, add_price):
    world = World(upstream)

    async def run() -> None:
        for operation, who in steps:
            await play(world, operation, who)
        # Whatever is still running (a reader that left) finishes before the check.
        await asyncio.sleep(0)

    with override_settings(CHAT_TOOLS=["tests.tool_functions.add"]):
        async_to_sync(run)()
    assert ledger_verify() == []
    assert tool_calls_verify() == []
    if steps and steps[0][0] == "tooled":  # a fresh conversation: its call was counted
        assert DailyToolUsage.objects.filter(tool="add", cost_e8__gte=500_000).exists()
    finished = Message.objects.filter(role="assistant", status__in=Message.FINAL_STATUSES)
    assert sum(DailyUsage.objects.values_list("requests", flat=True)) == finished.count()


@pytest.fixture
def add_price(transactional_db):
    ToolPrice.objects.create(
        tool="add", per_thousand_calls=Decimal("5"), valid_from=timezone.now() - timedelta(days=3)
    )
    prices_forget()


@pytest.fixture
def mini_price_now(transactional_db):
    return ModelPrice.objects.create(
        model="gpt-4.1-mini",
        input_per_million=Decimal("0.40"),
        cached_input_per_million=Decimal("0.10"),
        output_per_million=Decimal("1.60"),
        valid_from=timezone.now() - timedelta(days=3),
    )


# --- Each rule on its own ----------------------------------------------------------------


def ledger_cost() -> Decimal:
    return Decimal(sum(DailyUsage.objects.values_list("cost_e8", flat=True))) / E8


@pytest.mark.asyncio
async def test_a_turn_is_counted_once_with_its_outcome_tokens_cost_and_ttft(upstream, ada):
    await ModelPrice.objects.acreate(
        model="gpt-4.1-mini",
        input_per_million=Decimal("1000"),
        output_per_million=Decimal("2000"),
        valid_from=timezone.now() - timedelta(days=1),
    )
    upstream.queue(ok_reply())
    events = parse_sse((await ada.post("/api/chat", {"message": "hi"}, headers=SSE)).body)
    assert events[-1][0] == "end"
    [row] = [r async for r in DailyUsage.objects.all()]
    user = await get_user_model().objects.aget(username="ada")
    reply = await Message.objects.aget(role="assistant")
    assert (row.user_id, row.anonymous_key, row.model, row.provider, row.api) == (
        user.pk,
        "",
        "gpt-4.1-mini",
        reply.provider,
        "chat",
    )
    assert reply.provider  # the base URL's kind, stored with the reply
    assert row.day == timezone.localdate()
    assert (row.requests, row.completed, row.failed, row.cancelled) == (1, 1, 0, 0)
    assert (row.input_tokens, row.output_tokens, row.estimated) == (11, 7, 0)
    # 11 × $1000/M + 7 × $2000/M
    assert Decimal(row.cost_e8) / E8 == Decimal("0.025") == Decimal(events[-1][1]["cost"])
    assert sum(getattr(row, f) for f in ("ttft_le_50", "ttft_le_100", "ttft_le_200")) == 1


def test_recost_moves_the_difference_and_delete_and_purge_keep_every_cent(transactional_db):
    from tests.usage_rows import create_turns

    create_turns()
    before = ledger_cost()
    ModelPrice.objects.create(
        model="gpt-4.1-mini",
        input_per_million=Decimal("100"),
        output_per_million=Decimal("100"),
        valid_from=datetime(2020, 1, 1, tzinfo=timezone.get_default_timezone()),
    )
    result = messages_recost(messages=Message.objects.filter(model="gpt-4.1-mini"))
    assert result.changed > 0
    assert ledger_verify() == []
    assert ledger_cost() != before
    recosted = ledger_cost()
    Conversation.objects.update(deleted_at=timezone.now() - timedelta(days=1))
    assert conversations_purge(deleted_before=timezone.now()) > 0
    assert ledger_cost() == recosted
    assert ledger_verify() == []


def test_a_deleted_account_keeps_its_spend_and_verify_says_nothing(transactional_db):
    from tests.usage_rows import create_turns

    create_turns()
    total = ledger_cost()
    get_user_model().objects.get(username="bob").delete()  # his rows go with him
    assert ledger_cost() == total
    assert ledger_verify() == []
    ledger_rebuild()  # a rebuild keeps it too
    assert ledger_cost() == total


def test_verify_names_each_differing_key_and_exits_1_then_rebuild_repairs(transactional_db):
    from tests.usage_rows import create_turns

    create_turns()
    row = DailyUsage.objects.filter(model="gpt-4.1").first()
    DailyUsage.objects.filter(pk=row.pk).update(cost_e8=row.cost_e8 + 1, requests=row.requests + 2)
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("chat_ledger", "--verify", stdout=out, stderr=io.StringIO())
    assert exit_.value.code == 1
    [line] = out.getvalue().splitlines()
    assert str(row.day) in line and "gpt-4.1" in line
    assert f"requests ledger={row.requests + 2} rows={row.requests}" in line
    assert f"cost_e8 ledger={row.cost_e8 + 1} rows={row.cost_e8}" in line

    out = io.StringIO()
    call_command("chat_ledger", "--rebuild", "--since", str(row.day), stdout=out)
    assert "ledger row(s) written" in out.getvalue()
    out = io.StringIO()
    call_command("chat_ledger", "--verify", stdout=out)
    assert "match the rows" in out.getvalue()


def test_the_backfill_fills_an_empty_ledger_in_batches_with_progress(transactional_db):
    from tests.usage_rows import create_turns

    create_turns()
    want = rows_totals()
    DailyUsage.objects.all().delete()
    lines: list[str] = []
    counted = ledger_backfill(Message.objects, batch=4, progress=lines.append)
    assert counted == Message.objects.filter(role="assistant").count()
    assert len(lines) >= Message.objects.count() // 4
    assert "usage ledger" in lines[-1]
    assert ledger_verify() == []
    assert rows_totals() == want


@pytest.mark.asyncio
async def test_adoption_moves_a_visitors_usage_to_the_account(upstream):
    visitor = AsgiClient()
    upstream.queue(ok_reply())
    await visitor.post("/api/chat", {"message": "hi"}, headers=SSE)
    conversation = await Conversation.objects.aget()
    user = await get_user_model().objects.acreate(username="newcomer")
    await sync_to_async(conversations_adopt)(
        anonymous_key=conversation.anonymous_key, user_id=user.pk
    )
    rows = [r async for r in DailyUsage.objects.filter(requests__gt=0)]
    assert [(r.user_id, r.anonymous_key) for r in rows] == [(user.pk, "")]
    assert await sync_to_async(ledger_verify)() == []
