"""chat/spend/tool_calls.py: the tool-call ledger, counted when a turn is recorded, and the
usage dashboard's table of tool calls by tool and its reasoning-token total; tool prices,
`chat_ledger --verify/--rebuild` for tool calls, and `chat_usage --by tool`."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat.conversations import conversations_purge
from chat.llm import wire
from chat.models import Conversation, DailyToolUsage, Message, ToolPrice
from chat.spend.prices import messages_recost, prices_forget
from chat.spend.tool_calls import tool_calls_rebuild, tool_calls_verify
from tests.asgi import AsgiClient
from tests.test_tool_turns import ADD, chat_round

pytestmark = [pytest.mark.django_db(transaction=True)]


def dashboard() -> str:
    staff = get_user_model().objects.create_superuser("boss", "boss@example.com", "x")
    client = Client()
    client.force_login(staff)
    return client.get(reverse("admin:chat_message_usage"), {"period": "today"}).content.decode()


@pytest.mark.asyncio
async def test_each_call_is_counted_once_by_tool_and_runner_and_shown(upstream, settings):
    settings.CHAT_TOOLS = ["tests.tool_functions.add"]
    await priced_turn(upstream)  # no price: every call free

    rows = sorted(
        [(r.tool, r.runner, r.calls, r.errors) async for r in DailyToolUsage.objects.all()]
    )
    assert rows == [("add", "python", 2, 1), ("format_disk", "none", 1, 1)]
    page = await sync_to_async(dashboard)()
    table = page[page.index('id="tool-calls"') :]
    assert '<td>add</td>\n          <td>python</td>\n          <td class="num">2</td>' in table
    assert "<td>format_disk</td>" in table
    # Three model calls at 2 reasoning tokens each (chat_round's usage).
    assert '<div class="value">6</div><div class="label">of them reasoning</div>' in page


# --- Prices, proof and repair ------------------------------------------------------------


def chat_ledger(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("chat_ledger", *args, stdout=out, stderr=out)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


def chat_usage(*args: str) -> str:
    out = io.StringIO()
    call_command("chat_usage", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def add_priced(settings, transactional_db):
    """`add` (a Python tool) at $2 per 1,000 calls; every other tool is free."""
    settings.CHAT_TOOLS = ["tests.tool_functions.add"]
    ToolPrice.objects.create(
        tool="add", per_thousand_calls=Decimal("2"), valid_from=timezone.now() - timedelta(1)
    )
    prices_forget()


async def priced_turn(upstream) -> dict:
    """Two calls of `add` (one with arguments that break its schema, billed too when
    priced: the tool was called), one of a tool the model made up (free), then the
    answer."""
    invented = wire.WireToolCall("call_x", "format_disk", ["{}"])
    bad = wire.WireToolCall("call_y", "add", ['{"a": "two"}'])
    upstream.queue(chat_round([], n=1, calls=[ADD, invented]))
    upstream.queue(chat_round([], n=2, calls=[bad]))
    upstream.queue(chat_round(["5"], n=3))
    reply = (await AsgiClient().post("/api/chat", {"message": "2+3?"})).json()
    assert reply["status"] == "completed"
    return reply


@pytest.mark.asyncio
@pytest.mark.usefixtures("add_priced", "mini_price")
async def test_a_priced_tool_call_is_billed_on_the_row_its_rounds_and_the_ledger(upstream):
    reply = await priced_turn(upstream)

    row = await Message.objects.aget(pk=reply["message"])
    first, second, third = row.rounds
    assert [(c["tool"], c["runner"], c.get("cost")) for c in first["tool_calls"]] == [
        ("add", "python", "0.00200000"),
        ("format_disk", "none", None),
    ]
    assert [(c["tool"], c["error"], c["cost"]) for c in second["tool_calls"]] == [
        ("add", True, "0.00200000")
    ]
    assert "tool_calls" not in third
    tokens = sum(Decimal(r["cost"]) for r in row.rounds)
    assert row.cost == tokens + Decimal("0.004") and Decimal(reply["cost"]) == row.cost
    ledger = {r.tool: (r.calls, r.cost_e8) async for r in DailyToolUsage.objects.all()}
    assert ledger == {"add": (2, 400_000), "format_disk": (1, 0)}

    # A later price edit changes nothing stored; a recompute keeps the calls' price.
    await ToolPrice.objects.acreate(
        tool="add", per_thousand_calls=Decimal("50"), valid_from=timezone.now() - timedelta(1)
    )
    await sync_to_async(messages_recost)(messages=Message.objects.all())
    assert (await Message.objects.aget(pk=row.pk)).cost == row.cost
    assert await sync_to_async(chat_ledger)("--verify") == (
        0,
        "The usage and tool-call ledgers match the rows (all days).\n",
    )


@pytest.mark.usefixtures("add_priced")
def test_verify_names_a_tool_key_that_differs_and_rebuild_repairs_it_after_a_purge(upstream):
    async_to_sync(priced_turn)(upstream)
    conversation = Conversation.objects.get()
    conversation.deleted_at = timezone.now() - timedelta(days=40)
    conversation.save()
    conversations_purge(deleted_before=timezone.now() - timedelta(days=30))
    assert Message.objects.get(role="assistant").parts is None  # the text went, the calls stay
    assert chat_ledger("--verify")[0] == 0

    DailyToolUsage.objects.filter(tool="add").update(calls=7, cost_e8=1)
    DailyToolUsage.objects.create(day=date(2020, 1, 1), tool="ghost", runner="python", calls=1)
    code, out = chat_ledger("--verify")
    today = timezone.localdate()
    assert code == 1
    assert f"{today} tool add (python): calls ledger=7 rows=2, cost_e8 ledger=1 rows=400000" in out
    assert "2020-01-01 tool ghost (python): calls ledger=1 rows=0" in out
    assert "2 ledger key(s) differ" in out

    code, out = chat_ledger("--rebuild", "--since", str(today))
    assert "1 usage and 2 tool-call ledger row(s) written" in out
    code, out = chat_ledger("--verify")
    assert code == 1 and "ghost" in out and " add " not in out  # outside the range: kept
    chat_ledger("--rebuild")
    assert chat_ledger("--verify")[0] == 0
    assert sorted(DailyToolUsage.objects.values_list("tool", "calls", "cost_e8")) == [
        ("add", 2, 400_000),
        ("format_disk", 1, 0),
    ]


@pytest.mark.usefixtures("add_priced")
def test_chat_usage_shows_tool_calls_by_tool_and_reasoning_tokens(upstream):
    async_to_sync(priced_turn)(upstream)

    rows = list(csv.reader(io.StringIO(chat_usage("--by", "tool", "--format", "csv"))))
    assert rows[0] == ["tool", "runner", "calls", "failed", "mean_ms", "cost_usd"]
    assert [r[:4] + r[5:] for r in rows[1:]] == [
        ["add", "python", "2", "1", "0.00400000"],
        ["format_disk", "none", "1", "1", "0.00000000"],
        ["total", "", "3", "2", "0.00400000"],
    ]
    data = json.loads(chat_usage("--by", "tool", "--format", "json"))["tool_calls"]
    assert [(t["tool"], t["calls"], t["cost"]) for t in data] == [
        ("add", 2, "0.00400000"),
        ("format_disk", 1, "0.00000000"),
    ]
    table = chat_usage("--by", "tool")
    assert table.splitlines()[0].split() == [
        "tool",
        "runner",
        "calls",
        "failed",
        "mean_ms",
        "cost_usd",
    ]
    assert "$0.00400" in table or "$0.004" in table

    # Three model calls at 2 reasoning tokens each (chat_round's usage).
    days = list(csv.reader(io.StringIO(chat_usage("--format", "csv"))))
    assert days[0][9] == "reasoning_tokens" and days[-1][9] == "6"
    assert json.loads(chat_usage("--format", "json"))["totals"]["reasoning_tokens"] == 6


@pytest.mark.asyncio
@pytest.mark.usefixtures("mini_price")
async def test_a_tool_calls_price_counts_towards_the_budget_between_rounds(upstream, ada, settings):
    from chat.models import Budget

    settings.CHAT_TOOLS = ["tests.tool_functions.add"]
    await ToolPrice.objects.acreate(
        tool="add", per_thousand_calls=Decimal("20"), valid_from=timezone.now() - timedelta(1)
    )
    prices_forget()
    user = await get_user_model().objects.aget(username="ada")
    await Budget.objects.acreate(user=user, limit_usd=Decimal("0.01"))
    # The tokens cost a few millionths of a dollar; the one call $0.02, past the budget.
    upstream.queue(chat_round([], n=1, calls=[ADD]))
    upstream.queue(chat_round(["never sent"], n=2))
    reply = (await ada.post("/api/chat", {"message": "2+3?"})).json()

    assert upstream.calls == 1
    assert (reply["status"], reply["finish_reason"]) == ("incomplete", "budget_exceeded")
    assert Decimal(reply["cost"]) > Decimal("0.02")


def test_a_reply_recorded_before_its_rounds_named_their_calls_is_counted_from_its_parts():
    """Rows of the first tool-call ledger: calls in the parts only, the ledger counted."""
    conversation = Conversation.objects.create(anonymous_key="k", model="m")
    finished = timezone.now()
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="completed",
        finished_at=finished,
        parts=[
            {"type": "tool_call", "id": "a", "name": "add", "arguments": "{}", "runner": "python"},
            {"type": "tool_result", "id": "a", "name": "add", "output": "x", "error": True},
            {"type": "text", "text": "No."},
        ],
        rounds=[{"response_id": "r1", "cost": None}, {"response_id": "r2", "cost": None}],
    )
    day = timezone.localdate(finished)
    DailyToolUsage.objects.create(day=day, tool="add", runner="python", calls=1, errors=1)
    assert tool_calls_verify() == []
    tool_calls_rebuild()
    assert list(DailyToolUsage.objects.values_list("tool", "calls", "errors")) == [("add", 1, 1)]
