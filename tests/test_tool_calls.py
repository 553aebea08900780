"""chat/spend/tool_calls.py: the tool-call ledger, counted when a turn is recorded, and the
usage dashboard's table of tool calls by tool and its reasoning-token total."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from chat.llm import wire
from chat.models import DailyToolUsage
from tests.asgi import AsgiClient
from tests.test_tool_turns import ADD, chat_round

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def dashboard() -> str:
    staff = get_user_model().objects.create_superuser("boss", "boss@example.com", "x")
    client = Client()
    client.force_login(staff)
    return client.get(reverse("admin:chat_message_usage"), {"period": "today"}).content.decode()


async def test_each_call_is_counted_once_by_tool_and_runner_and_shown(upstream, settings):
    settings.CHAT_TOOLS = ["tests.tool_functions.add"]
    invented = wire.WireToolCall("call_x", "format_disk", ["{}"])
    bad = wire.WireToolCall("call_y", "add", ['{"a": "two"}'])
    upstream.queue(chat_round([], n=1, calls=[ADD, invented]))
    upstream.queue(chat_round([], n=2, calls=[bad]))
    upstream.queue(chat_round(["5"], n=3))
    reply = (await AsgiClient().post("/api/chat", {"message": "2+3?"})).json()
    assert reply["status"] == "completed"

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
