"""Managing conversations through the API (chat/conversations.py): rename, delete (soft,
usage kept), the paged list, search on the database's own index, export; and the
chat_purge and chat_export commands."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.utils import timezone

from chat.models import Conversation, Message
from chat.spend.periods import cutoff_before, period_bounds
from chat.spend.reports import usage_summary
from tests.asgi import AsgiClient

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

JSON = {"content-type": "application/json"}


async def start(client: AsgiClient, message: str) -> dict:
    response = await client.post("/api/chat", {"message": message})
    assert response.status == 200, response.body
    return response.json()


async def listed(client: AsgiClient, query: str = "") -> list[dict]:
    response = await client.get("/api/conversations" + query)
    assert response.status == 200, response.body
    return response.json()["conversations"]


async def test_rename_trims_and_keeps_the_list_order(ada, bob):
    first = (await start(ada, "first question"))["conversation"]
    second = (await start(ada, "second question"))["conversation"]
    renamed = await ada.request(
        "PATCH", f"/api/conversations/{first}", body={"title": "  Taxes\n 2026  "}
    )
    assert renamed.status == 200, renamed.body
    assert renamed.json()["title"] == "Taxes 2026" and renamed.json()["id"] == first
    assert [c["id"] for c in await listed(ada)] == [second, first]  # not moved to the top
    assert (await ada.get(f"/api/conversations/{first}")).json()["title"] == "Taxes 2026"
    # Someone else's conversation is not found, and keeps its title.
    stolen = await bob.request("PATCH", f"/api/conversations/{first}", body={"title": "x"})
    assert stolen.status == 404
    assert (await Conversation.objects.aget(pk=first)).title == "Taxes 2026"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"title": "   "}, 400, "invalid_title"),
        ({"title": "x" * 201}, 400, "invalid_title"),
        ({"title": 7}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"title": "ok", "extra": 1}, 400, "invalid_request"),
        ({"title": "nul\x00"}, 400, "invalid_request"),
    ],
)
async def test_a_bad_title_is_refused_and_nothing_changes(ada, body, status, error):
    conversation = (await start(ada, "keep my title"))["conversation"]
    response = await ada.request("PATCH", f"/api/conversations/{conversation}", body=body)
    assert response.status == status and response.json()["error"]["type"] == error
    assert (await Conversation.objects.aget(pk=conversation)).title == "keep my title"


async def test_delete_hides_the_conversation_but_keeps_its_usage(ada, bob, mini_price, upstream):
    kept = (await start(ada, "keep this"))["conversation"]
    gone = (await start(ada, "forget this"))["conversation"]
    since, until = period_bounds(since="1d")
    before = await sync_to_async(usage_summary)(since=since, until=until, by="user")

    assert (await bob.request("DELETE", f"/api/conversations/{gone}")).status == 404
    deleted = await ada.request("DELETE", f"/api/conversations/{gone}")
    assert deleted.status == 204 and deleted.body == b""

    assert (await ada.get(f"/api/conversations/{gone}")).status == 404
    assert (await ada.request("DELETE", f"/api/conversations/{gone}")).status == 404
    assert [c["id"] for c in await listed(ada)] == [kept]
    assert await listed(ada, "?q=forget") == []
    continued = await ada.post("/api/chat", {"message": "again", "conversation": gone})
    assert continued.status == 404
    message = await Message.objects.filter(conversation_id=gone, role="assistant").afirst()
    assert (await ada.post(f"/api/messages/{message.pk}/cancel", headers=JSON)).status == 404
    # Every report still counts it, to the cent.
    after = await sync_to_async(usage_summary)(since=since, until=until, by="user")
    assert after.totals == before.totals and after.rows == before.rows
    assert before.totals.cost > Decimal(0)
    stored = await Conversation.objects.aget(pk=gone)
    assert stored.deleted_at is not None and stored.title == "forget this"


async def test_a_delete_needs_no_body_but_a_cross_site_one_is_refused(ada):
    conversation = (await start(ada, "hello"))["conversation"]
    refused = await ada.request(
        "DELETE", f"/api/conversations/{conversation}", headers={"sec-fetch-site": "cross-site"}
    )
    assert refused.status == 403
    assert (await ada.get(f"/api/conversations/{conversation}")).status == 200


async def test_the_list_pages_with_a_cursor(ada):
    ids = [(await start(ada, f"question {i}"))["conversation"] for i in range(7)]
    seen: list[str] = []
    query = "?limit=3"
    pages = 0
    while True:
        response = await ada.get("/api/conversations" + query)
        page = response.json()
        seen += [c["id"] for c in page["conversations"]]
        pages += 1
        if page["next"] is None:
            break
        query = f"?limit=3&before={page['next']}"
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, none twice, none missed


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?before=not-a-cursor", "invalid_cursor"),
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?limit=x", "invalid_limit"),
    ],
)
async def test_bad_paging_is_a_400(ada, query, error):
    response = await ada.get("/api/conversations" + query)
    assert response.status == 400 and response.json()["error"]["type"] == error


async def test_search_finds_titles_and_message_text_of_ones_own_only(ada, bob):
    garden = (await start(ada, "How deep should tomato seedlings be planted?"))["conversation"]
    await start(ada, "Plan a trip to Lisbon")
    other = (await start(ada, "Unrelated"))["conversation"]
    await ada.request("PATCH", f"/api/conversations/{other}", body={"title": "Tomato recipes"})
    await start(bob, "My own tomato question")

    found = await listed(ada, "?q=tomato")
    assert {c["id"] for c in found} == {garden, other}
    by_id = {c["id"]: c for c in found}
    assert "tomato seedlings" in by_id[garden]["snippet"].lower()
    # Every word must match; case is ignored.
    assert [c["id"] for c in await listed(ada, "?q=TOMATO%20seedlings")] == [garden]
    assert await listed(ada, "?q=tomato%20lisbon") == []
    # Query syntax is not passed through: punctuation alone finds nothing, quietly.
    assert await listed(ada, "?q=%22%2A%29%28") == []
    # Text the demo model wrote in a reply is found too.
    assert garden in {c["id"] for c in await listed(ada, "?q=offline%20demo")}


async def test_search_sees_a_reply_once_it_is_recorded_and_a_purge_removes_it(ada):
    conversation = (await start(ada, "remember the word zanzibar"))["conversation"]
    assert [c["id"] for c in await listed(ada, "?q=zanzibar")] == [conversation]
    await ada.request("DELETE", f"/api/conversations/{conversation}")
    await Conversation.objects.filter(pk=conversation).aupdate(
        deleted_at=timezone.now() - timedelta(days=31)
    )
    out = io.StringIO()
    await sync_to_async(call_command)("chat_purge", "--deleted-before", "30d", stdout=out)
    assert "Purged the text of 1 conversation(s)" in out.getvalue()
    rows = [m async for m in Message.objects.filter(conversation_id=conversation)]
    assert rows and all(m.content == "" for m in rows)
    assistant = next(m for m in rows if m.role == "assistant")
    assert assistant.output_tokens and assistant.status == "completed"  # numbers kept
    purged = await Conversation.objects.aget(pk=conversation)
    assert purged.title == "" and purged.deleted_at is not None
    # The index forgot the text too: restoring the row would not find the word.
    await Conversation.objects.filter(pk=conversation).aupdate(deleted_at=None)
    assert await listed(ada, "?q=zanzibar") == []


async def test_a_purge_cutoff_is_a_number_of_days_or_a_date():
    now = timezone.now()
    assert cutoff_before("30d", now) == now - timedelta(days=30)
    assert cutoff_before("2026-01-31") == timezone.make_aware(datetime(2026, 1, 31))
    with pytest.raises(CommandError, match=r"^'soon' is not a number of days such as 30d, or"):
        await sync_to_async(call_command)("chat_purge", "--deleted-before", "soon")


async def test_export_as_markdown_and_json(ada, bob, mini_price, upstream):
    conversation = (await start(ada, "Say *hi*"))["conversation"]
    md = await ada.get(f"/api/conversations/{conversation}/export?format=md")
    assert md.status == 200
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.headers["content-disposition"].startswith('attachment; filename="say-hi-')
    text = md.body.decode()
    assert text.startswith("# Say *hi*") and "## You\n\nSay *hi*" in text
    assert "## Assistant (gpt-4.1-mini, completed)" in text

    data = await ada.get(f"/api/conversations/{conversation}/export?format=json")
    exported = json.loads(data.body)
    assistant = exported["messages"][-1]
    stored = await Message.objects.aget(pk=assistant["id"])
    assert assistant["usage"]["output_tokens"] == stored.output_tokens
    assert Decimal(assistant["cost"]) == stored.cost and assistant["model"] == stored.model

    assert (await ada.get(f"/api/conversations/{conversation}/export?format=pdf")).status == 400
    assert (await bob.get(f"/api/conversations/{conversation}/export")).status == 404


async def test_chat_export_writes_one_json_line_per_conversation(ada):
    first = (await start(ada, "first"))["conversation"]
    gone = (await start(ada, "second"))["conversation"]
    await ada.request("DELETE", f"/api/conversations/{gone}")
    out, err = io.StringIO(), io.StringIO()
    await sync_to_async(call_command)("chat_export", "--since", "1d", stdout=out, stderr=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["id"] for line in lines] == [first]
    assert [m["role"] for m in lines[0]["messages"]] == ["user", "assistant"]
    assert lines[0]["owner"] == "ada" and "Exported 1 conversation(s)." in err.getvalue()
    out = io.StringIO()
    await sync_to_async(call_command)(
        "chat_export", "--since", "1d", "--include-deleted", stdout=out, stderr=io.StringIO()
    )
    assert len(out.getvalue().splitlines()) == 2
