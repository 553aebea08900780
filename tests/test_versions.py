"""Regenerate and edit (chat/turns/versions.py) end to end through the ASGI app: the new
version's reply streams from the same context, the earlier version stays (billed, in every
report), only the current version is context later, and the rules: the last turn only, a
finished reply only, the owner only."""

from __future__ import annotations

import asyncio
import io
import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from chat.models import Message
from chat.spend.periods import period_bounds
from chat.spend.reports import usage_summary
from tests.asgi import AsgiClient, parse_sse
from tests.upstream import Reply, chat_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SSE = {"accept": "text/event-stream"}
JSON = {"content-type": "application/json"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@pytest.fixture
def model(upstream, mini_price):
    """The fake upstream, answering "reply 1", "reply 2", … with usage, in order."""
    for n in range(1, 9):
        upstream.queue(Reply(script=chat_script([f"reply {n}"], usage=USAGE)))
    return upstream


async def say(client: AsgiClient, message: str, conversation: str | None = None) -> dict:
    response = await client.post("/api/chat", {"message": message, "conversation": conversation})
    assert response.status == 200, response.body
    return response.json()


async def two_turns(client: AsgiClient) -> dict:
    first = await say(client, "first question")
    return await say(client, "second question", first["conversation"])


async def stream(client: AsgiClient, created: dict) -> list[tuple[str, dict]]:
    response = await client.get(created["stream_url"], headers=SSE)
    assert response.status == 200, response.body
    return parse_sse(response.body)


def sent_context(upstream) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in upstream.bodies[-1]["messages"]]


async def detail(client: AsgiClient, conversation: str) -> dict:
    response = await client.get(f"/api/conversations/{conversation}")
    assert response.status == 200, response.body
    return response.json()


async def test_regenerate_streams_a_new_reply_and_keeps_the_old_one(ada, model):
    last = await two_turns(ada)
    created = await ada.post(f"/api/messages/{last['message']}/regenerate", {})
    assert created.status == 201, created.body
    body = created.json()
    assert body["conversation"] == last["conversation"]
    assert body["stream_url"] == f"/api/messages/{body['message']}/stream"
    assert model.calls == 2  # deferred: nothing is sent before the stream is opened

    events = await stream(ada, body)
    assert [name for name, _ in events] == ["start", "delta", "end"]
    assert events[1][1]["text"] == "reply 3" and events[-1][1]["status"] == "completed"
    # The same context as the reply it replaces: the old reply is not in it.
    assert sent_context(model) == [
        ("user", "first question"),
        ("assistant", "reply 1"),
        ("user", "second question"),
    ]

    shown = (await detail(ada, last["conversation"]))["messages"]
    assert [(m["role"], m["content"]) for m in shown] == [
        ("user", "first question"),
        ("assistant", "reply 1"),
        ("user", "second question"),
        ("assistant", "reply 3"),
    ]
    assert [(m["version"], m["versions"]) for m in shown] == [(1, 1), (1, 1), (2, 2), (2, 2)]
    assert shown[0]["previous_versions"] == []
    (earlier_prompt,) = shown[2]["previous_versions"]
    (earlier_reply,) = shown[3]["previous_versions"]
    assert earlier_prompt["content"] == "second question"
    assert earlier_reply["id"] == last["message"] and earlier_reply["content"] == "reply 2"
    assert earlier_reply["status"] == "completed" and Decimal(earlier_reply["cost"]) > 0
    assert shown[3]["id"] == body["message"] and shown[2]["id"] == body["user_message"]

    # A follow-up is sent only the current version of the regenerated turn.
    await say(ada, "third question", last["conversation"])
    assert sent_context(model) == [
        ("user", "first question"),
        ("assistant", "reply 1"),
        ("user", "second question"),
        ("assistant", "reply 3"),
        ("user", "third question"),
    ]


async def test_both_versions_are_billed_and_reported(ada, model):
    last = await two_turns(ada)
    since, until = period_bounds(since="1d")
    before = await sync_to_async(usage_summary)(since=since, until=until, by="user")
    created = (await ada.post(f"/api/messages/{last['message']}/regenerate", {})).json()
    await stream(ada, created)
    after = await sync_to_async(usage_summary)(since=since, until=until, by="user")
    old, new = [await Message.objects.aget(pk=pk) for pk in (last["message"], created["message"])]
    assert old.superseded_at is not None and new.superseded_at is None
    assert new.version_of_id == old.pk and old.cost == new.cost > 0
    assert after.totals.cost == before.totals.cost + new.cost
    assert after.totals.output_tokens == before.totals.output_tokens + 5


async def test_edit_replaces_the_last_message_and_its_reply(ada, model):
    last = await two_turns(ada)
    prompt = await Message.objects.aget(pk=last["message"] - 1)
    created = await ada.post(
        f"/api/messages/{prompt.pk}/edit", {"message": "second question, fixed"}
    )
    assert created.status == 201, created.body
    events = await stream(ada, created.json())
    assert events[1][1]["text"] == "reply 3"
    assert sent_context(model) == [
        ("user", "first question"),
        ("assistant", "reply 1"),
        ("user", "second question, fixed"),
    ]
    shown = (await detail(ada, last["conversation"]))["messages"]
    assert [m["content"] for m in shown[2:]] == ["second question, fixed", "reply 3"]
    assert [m["content"] for m in shown[2]["previous_versions"]] == ["second question"]
    assert [m["content"] for m in shown[3]["previous_versions"]] == ["reply 2"]

    # Edited again after a regenerate: three versions, each a whole pair, in order.
    regenerated = (
        await ada.post(f"/api/messages/{created.json()['message']}/regenerate", {})
    ).json()
    await stream(ada, regenerated)
    edited = await ada.post(
        f"/api/messages/{regenerated['user_message']}/edit", {"message": "third try"}
    )
    await stream(ada, edited.json())
    user, reply = (await detail(ada, last["conversation"]))["messages"][2:]
    assert (user["version"], user["versions"], reply["version"]) == (4, 4, 4)
    pairs = [
        (u["content"], r["content"])
        for u, r in zip(
            [*user["previous_versions"], user], [*reply["previous_versions"], reply], strict=True
        )
    ]
    assert pairs == [
        ("second question", "reply 2"),
        ("second question, fixed", "reply 3"),
        ("second question, fixed", "reply 4"),
        ("third try", "reply 5"),
    ]


async def test_a_failed_reply_can_be_regenerated(ada, upstream):
    upstream.queue(Reply(status=500, json_body={"error": {"message": "boom"}}))
    failed = await ada.post("/api/chat", {"message": "hello"})
    assert failed.status == 502
    reply = await Message.objects.aget(role="assistant")
    assert reply.status == "failed"
    # An empty body is `{}`.
    created = await ada.post(f"/api/messages/{reply.pk}/regenerate", headers=JSON)
    assert created.status == 201, created.body
    events = await stream(ada, created.json())
    assert events[-1][0] == "end" and events[1][1]["text"] == "Hello world"


async def test_only_the_last_turn_and_only_a_finished_reply(ada, model):
    first = await say(ada, "first question")
    last = await say(ada, "second question", first["conversation"])
    not_last = await ada.post(f"/api/messages/{first['message']}/regenerate", {})
    assert not_last.status == 409 and not_last.json()["error"]["type"] == "not_last_turn"
    edit_not_last = await ada.post(f"/api/messages/{first['message'] - 1}/edit", {"message": "x"})
    assert edit_not_last.status == 409
    assert edit_not_last.json()["error"]["type"] == "not_last_turn"

    pending = (await ada.post(f"/api/messages/{last['message']}/regenerate", {})).json()
    # Its reply is not written yet: neither a second regenerate nor an edit may replace it.
    again = await ada.post(f"/api/messages/{pending['message']}/regenerate", {})
    assert again.status == 409 and again.json()["error"]["type"] == "turn_in_progress"
    edit = await ada.post(f"/api/messages/{pending['user_message']}/edit", {"message": "x"})
    assert edit.status == 409 and edit.json()["error"]["type"] == "turn_in_progress"
    # The version it replaced is no longer the last turn.
    old = await ada.post(f"/api/messages/{last['message']}/regenerate", {})
    assert old.status == 409 and old.json()["error"]["type"] == "not_last_turn"
    # A message of the other role is not what these endpoints take.
    assert (
        await ada.post(f"/api/messages/{pending['message']}/edit", {"message": "x"})
    ).status == 404
    assert (await ada.post(f"/api/messages/{pending['user_message']}/regenerate", {})).status == 404
    assert await Message.objects.acount() == 6


async def test_another_persons_or_a_deleted_conversations_messages_are_not_found(ada, bob, model):
    last = await say(ada, "mine")
    for path, body in [
        (f"/api/messages/{last['message']}/regenerate", {}),
        (f"/api/messages/{last['message'] - 1}/edit", {"message": "taken over"}),
        ("/api/messages/999999/regenerate", {}),
        ("/api/messages/999999/edit", {"message": "x"}),
    ]:
        response = await bob.post(path, body)
        assert response.status == 404 and response.json()["error"]["type"] == "not_found"
    await ada.request("DELETE", f"/api/conversations/{last['conversation']}")
    gone = await ada.post(f"/api/messages/{last['message']}/regenerate", {})
    assert gone.status == 404
    assert await Message.objects.acount() == 2
    assert not await Message.objects.filter(superseded_at__isnull=False).aexists()


@pytest.mark.parametrize(
    ("endpoint", "body", "status", "error"),
    [
        ("edit", {"message": "   "}, 400, "empty_message"),
        ("edit", {}, 400, "invalid_request"),
        ("edit", {"message": "x" * 40_001}, 413, "message_too_long"),
        ("edit", {"message": "ok", "model": "gpt-4.1"}, 400, "invalid_request"),
        ("edit", b"{not json", 400, "invalid_json"),
        ("regenerate", {"model": "not-allowed"}, 400, "invalid_model"),
        ("regenerate", {"model": ""}, 400, "invalid_request"),
        ("regenerate", {"message": "x"}, 400, "invalid_request"),
        ("regenerate", b"[]", 400, "invalid_request"),
    ],
)
async def test_a_bad_body_changes_nothing(ada, model, settings, endpoint, body, status, error):
    settings.CHAT_MAX_MESSAGE_CHARS = 40_000
    last = await say(ada, "keep me")
    target = last["message"] if endpoint == "regenerate" else last["message"] - 1
    response = await ada.post(f"/api/messages/{target}/{endpoint}", body, headers=JSON)
    assert response.status == status, response.body
    assert response.json()["error"]["type"] == error
    assert await Message.objects.acount() == 2
    assert not await Message.objects.filter(superseded_at__isnull=False).aexists()


async def test_regenerate_with_another_allowed_model(ada, model):
    last = await say(ada, "hello")
    created = await ada.post(f"/api/messages/{last['message']}/regenerate", {"model": "gpt-4.1"})
    await stream(ada, created.json())
    assert model.bodies[-1]["model"] == "gpt-4.1"
    assert (await detail(ada, last["conversation"]))["model"] == "gpt-4.1"


async def test_two_regenerates_at_once_make_one_new_version(ada, model):
    last = await say(ada, "hello")
    url = f"/api/messages/{last['message']}/regenerate"
    answers = await asyncio.gather(*(ada.post(url, {}) for _ in range(3)))
    assert sorted(a.status for a in answers) == [201, 409, 409]
    assert await Message.objects.filter(superseded_at__isnull=True).acount() == 2


async def test_exports_keep_every_version(ada, model):
    last = await say(ada, "hello")
    created = (await ada.post(f"/api/messages/{last['message']}/regenerate", {})).json()
    await stream(ada, created)
    exported = await ada.get(f"/api/conversations/{last['conversation']}/export?format=json")
    reply = json.loads(exported.body)["messages"][-1]
    assert reply["content"] == "reply 2" and reply["versions"] == 2
    assert reply["previous_versions"][0]["content"] == "reply 1"
    markdown = (await ada.get(f"/api/conversations/{last['conversation']}/export")).body.decode()
    assert "reply 2" in markdown and "reply 1" not in markdown  # people read the current one

    out = io.StringIO()
    await sync_to_async(call_command)(
        "chat_export", "--since", "1d", stdout=out, stderr=io.StringIO()
    )
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(m["content"], m["current"]) for m in record["messages"]] == [
        ("hello", False),
        ("reply 1", False),
        ("hello", True),
        ("reply 2", True),
    ]
    assert record["messages"][3]["version_of"] == record["messages"][1]["id"]


async def test_choosing_an_earlier_version_makes_it_the_context_again(ada, bob, model):
    last = await two_turns(ada)
    created = (await ada.post(f"/api/messages/{last['message']}/regenerate", {})).json()
    await stream(ada, created)
    # Someone else cannot choose for ada; a message of an earlier turn cannot be chosen.
    assert (await bob.post(f"/api/messages/{last['message']}/select", {})).status == 404
    first_reply = last["message"] - 2
    refused = await ada.post(f"/api/messages/{first_reply}/select", {})
    assert refused.status == 409 and refused.json()["error"]["type"] == "not_last_turn"

    chosen = await ada.post(f"/api/messages/{last['message']}/select", {})
    assert chosen.status == 200, chosen.body
    assert chosen.json() == {
        "conversation": last["conversation"],
        "message": last["message"],
        "user_message": last["message"] - 1,
    }
    user, reply = (await detail(ada, last["conversation"]))["messages"][2:]
    assert (reply["content"], reply["version"], reply["versions"]) == ("reply 2", 1, 2)
    assert reply["previous_versions"] == [] and user["previous_versions"] == []
    assert [v["content"] for v in reply["later_versions"]] == ["reply 3"]
    await say(ada, "third question", last["conversation"])
    assert sent_context(model)[-2:] == [("assistant", "reply 2"), ("user", "third question")]

    # Only the last turn's versions can be chosen; choosing the current one changes nothing.
    stale = await ada.post(f"/api/messages/{created['message']}/select", {})
    assert stale.status == 409 and stale.json()["error"]["type"] == "not_last_turn"
    newest = (await detail(ada, last["conversation"]))["messages"][-1]
    same = await ada.post(f"/api/messages/{newest['id']}/select", {})
    assert same.status == 200 and same.json()["message"] == newest["id"]


async def test_a_version_cannot_be_chosen_while_the_reply_is_written(ada, model):
    last = await say(ada, "hello")
    pending = (await ada.post(f"/api/messages/{last['message']}/regenerate", {})).json()
    refused = await ada.post(f"/api/messages/{last['message']}/select", {})
    assert refused.status == 409 and refused.json()["error"]["type"] == "turn_in_progress"
    assert (await Message.objects.aget(pk=pending["message"])).superseded_at is None
