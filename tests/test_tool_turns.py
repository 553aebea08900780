"""A turn that reasons and calls tools, end to end through the API with the real SDK and a
scripted upstream: events in order, both APIs' replay of calls and results, every model
call billed once, the loop's limit, a failure mid-loop, Stop during a tool, resuming, and
the demo model answering "what time is it in Tokyo?"."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from chat import llm
from chat.llm import wire
from chat.models import DailyToolUsage, Message
from chat.spend.prices import messages_recost
from chat.turns import turn_replay
from tests import tool_functions
from tests.asgi import AsgiClient, parse_sse
from tests.upstream import MODEL, Reply

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SSE = {"Accept": "text/event-stream"}
ADD = wire.WireToolCall("call_a", "add", ['{"a": 2,', ' "b": 3}'])
WHO = wire.WireToolCall("call_b", "whoami", ["{}"])


@pytest.fixture
def tools(settings, upstream):
    settings.CHAT_TOOLS = [f"tests.tool_functions.{n}" for n in ("add", "whoami", "slow")]
    return upstream


def kinds(events) -> list[str]:
    """The events' names, each run of `reasoning` or `delta` as one (the relay merges
    pieces that queue up)."""
    names: list[str] = []
    for name, _ in events:
        if not (names and name == names[-1] and name in ("reasoning", "delta")):
            names.append(name)
    return names


def chat_round(parts, *, n, calls=(), reasoning=(), prompt=10, completion=5):
    return Reply(
        script=list(
            wire.chat_stream(
                parts,
                completion_id=f"chatcmpl-{n}",
                model=MODEL,
                usage=wire.chat_usage(
                    prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=2
                ),
                reasoning=reasoning,
                tool_calls=calls,
            )
        )
    )


def responses_round(parts, *, n, calls=(), reasoning=(), prompt=10, completion=5):
    return Reply(
        script=list(
            wire.responses_stream(
                parts,
                response_id=f"resp_{n}",
                model=MODEL,
                usage=wire.responses_usage(
                    input_tokens=prompt, output_tokens=completion, reasoning_tokens=2
                ),
                reasoning=reasoning,
                tool_calls=calls,
            )
        )
    )


async def test_chat_tool_loop_streams_stores_and_bills_each_round(tools, mini_price):
    tools.queue(chat_round([], n=1, calls=[ADD, WHO], reasoning=["Sum ", "it."]))
    tools.queue(chat_round(["It is 5."], n=2, prompt=30, completion=7))
    client = AsgiClient()
    response = await client.post("/api/chat", {"message": "2+3?"}, headers=SSE)
    events = parse_sse(response.body)

    assert kinds(events) == [
        "start",
        "reasoning",
        "tool_call",
        "tool_call",
        "tool_result",
        "tool_result",
        "delta",
        "end",
    ]
    events = [e for e in events if e[0] != "reasoning"]
    assert events[1][1] == {
        "id": "call_a",
        "name": "add",
        "arguments": '{"a": 2, "b": 3}',
        "runner": "python",
    }
    assert events[3][1]["output"] == "5" and events[3][1]["error"] is False
    owner = events[4][1]["output"]
    assert '"anonymous_key": "' in owner and '"user_id": null' in owner  # who asked

    # The second call carries the first one's calls and results, as Chat Completions wants.
    assert tools.calls == 2
    sent = tools.bodies[1]["messages"]
    assert sent[-3] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "whoami", "arguments": "{}"}},
        ],
    }
    assert sent[-2] == {"role": "tool", "tool_call_id": "call_a", "content": "5"}
    assert sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == "call_b"
    assert [t["function"]["name"] for t in tools.bodies[0]["tools"]] == ["add", "whoami", "slow"]

    row = await Message.objects.aget(pk=events[0][1]["message"])
    assert row.content == "It is 5."
    assert [p["type"] for p in row.parts] == [
        "reasoning",
        "tool_call",
        "tool_call",
        "tool_result",
        "tool_result",
        "text",
    ]
    assert row.parts[0]["text"] == "Sum it." and row.parts[0]["duration_ms"] >= 0
    # Each model call once; the row is their sum, and its cost the sum of theirs.
    assert [r["usage"]["input_tokens"] for r in row.rounds] == [10, 30]
    assert (row.input_tokens, row.output_tokens, row.reasoning_tokens) == (40, 12, 4)
    assert row.cost == sum(Decimal(r["cost"]) for r in row.rounds) > 0
    assert [r["response_id"] for r in row.rounds] == ["chatcmpl-1", "chatcmpl-2"]
    assert events[-1][1]["usage"]["total_tokens"] == 52


async def test_responses_tool_loop_sends_back_reasoning_calls_and_outputs(tools, settings):
    settings.CHAT_API = "responses"
    tools.queue(responses_round(["Let me add."], n=1, calls=[ADD], reasoning=["Sum."]))
    tools.queue(responses_round(["5"], n=2))
    reply = (await AsgiClient().post("/api/chat", {"message": "2+3?"})).json()

    assert reply["reply"] == "Let me add.5"
    assert [p["type"] for p in reply["parts"]] == [
        "reasoning",
        "text",
        "tool_call",
        "tool_result",
        "text",
    ]
    # The reasoning item is not sent back: a message, not the call, followed it.
    assert tools.bodies[1]["input"] == [
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "Let me add."},
        {
            "type": "function_call",
            "call_id": "call_a",
            "name": "add",
            "arguments": '{"a": 2, "b": 3}',
        },
        {"type": "function_call_output", "call_id": "call_a", "output": "5"},
    ]


async def test_the_reasoning_item_goes_back_just_before_its_call(tools, settings):
    settings.CHAT_API = "responses"
    tools.queue(responses_round([], n=1, calls=[ADD], reasoning=["Sum."]))
    tools.queue(responses_round(["5"], n=2))
    await AsgiClient().post("/api/chat", {"message": "2+3?"})
    assert tools.bodies[1]["input"][-3:] == [
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Sum."}]},
        {
            "type": "function_call",
            "call_id": "call_a",
            "name": "add",
            "arguments": '{"a": 2, "b": 3}',
        },
        {"type": "function_call_output", "call_id": "call_a", "output": "5"},
    ]


async def test_a_model_that_keeps_calling_tools_is_stopped_at_the_limit(tools, settings):
    settings.CHAT_TOOL_MAX_ROUNDS = 2
    invented = wire.WireToolCall("call_x", "format_disk", ["{}"])
    tools.queue(chat_round([], n=1, calls=[invented]))
    tools.queue(chat_round([], n=2, calls=[ADD]))  # offered no tools, calls one anyway
    reply = (await AsgiClient().post("/api/chat", {"message": "loop"})).json()

    assert tools.calls == 2
    assert "tools" in tools.bodies[0] and "tools" not in tools.bodies[1]
    results = [p for p in reply["parts"] if p["type"] == "tool_result"]
    assert results[0]["output"].startswith("There is no tool named 'format_disk'.")
    assert results[1]["output"] == "Not run: this turn reached its limit of 2 model calls."
    assert reply["status"] == "completed" and reply["usage"]["input_tokens"] == 20


async def test_a_round_that_breaks_keeps_the_usage_of_the_rounds_before(tools):
    tools.queue(chat_round([], n=1, calls=[ADD], prompt=100, completion=10))
    broken = chat_round(["par", "tial"], n=2).script[:3]  # cut before finish and usage
    tools.queue(Reply(script=broken))
    reply = (await AsgiClient().post("/api/chat", {"message": "x"})).json()

    assert reply["status"] == "failed"
    row = await Message.objects.aget(pk=reply["message"])
    assert len(row.rounds) == 1 and row.rounds[0]["usage"]["input_tokens"] == 100
    assert row.input_tokens > 100 and row.usage_estimated  # round 1, plus an estimate


async def test_stop_cancels_a_running_tool_and_keeps_the_round_before(tools):
    slow = wire.WireToolCall("call_s", "slow", ['{"seconds": 30}'])
    tools.queue(chat_round([], n=1, calls=[slow], prompt=11))
    tool_functions.started = asyncio.Event()
    client = AsgiClient()
    info = (await client.post("/api/chat?stream=defer", {"message": "wait"})).json()
    reading = asyncio.create_task(client.get(info["stream_url"], headers=SSE))
    await asyncio.wait_for(tool_functions.started.wait(), 10)
    cancelled = await client.post(f"/api/messages/{info['message']}/cancel", {})
    assert cancelled.status < 300
    events = parse_sse((await asyncio.wait_for(reading, 10)).body)

    assert [name for name, _ in events][-2:] == ["tool_call", "end"]
    assert events[-1][1]["status"] == "cancelled"
    row = await Message.objects.aget(pk=info["message"])
    assert row.status == "cancelled" and row.input_tokens == 11 and tools.calls == 1
    assert [p["type"] for p in row.parts] == ["tool_call"]


async def test_a_reader_resumes_mid_tool_and_a_finished_turn_replays_its_parts(tools):
    slow = wire.WireToolCall("call_s", "slow", ['{"seconds": 0.4}'])
    tools.queue(chat_round([], n=1, calls=[slow], reasoning=["wait"]))
    tools.queue(chat_round(["done"], n=2))
    client = AsgiClient()
    info = (await client.post("/api/chat?stream=defer", {"message": "wait"})).json()
    url = info["stream_url"]
    tool_functions.started = asyncio.Event()
    first = asyncio.create_task(client.get(url, headers=SSE))
    await asyncio.wait_for(tool_functions.started.wait(), 10)
    resumed = await client.get(url, headers={**SSE, "Last-Event-ID": "2"})  # after reasoning
    whole = parse_sse((await first).body)
    assert parse_sse(resumed.body) == whole[2:]
    assert [name for name, _ in whole] == [
        "start",
        "reasoning",
        "tool_call",
        "tool_result",
        "delta",
        "end",
    ]
    await asyncio.sleep(0)
    row = await Message.objects.aget(pk=info["message"])
    again = parse_sse((await client.get(url, headers=SSE)).body)  # a reload, from the log
    assert again == whole
    # Once the log has expired, the same events come from the row.
    replayed = [(e.type, e.data) for e in turn_replay(row)]
    assert [name for name, _ in replayed] == [name for name, _ in whole]
    assert replayed[1][1]["text"] == "wait" and replayed[1][1]["duration_ms"] >= 0
    assert replayed[3][1]["output"] == "waited 0.4"
    assert tools.calls == 2 and row.status == "completed"


async def test_the_next_turn_sends_earlier_calls_and_results_as_context(tools):
    tools.queue(chat_round([], n=1, calls=[ADD]))
    tools.queue(chat_round(["5"], n=2))
    client = AsgiClient()
    first = (await client.post("/api/chat", {"message": "2+3?"})).json()
    tools.queue(chat_round(["10"], n=3))
    await client.post("/api/chat", {"message": "times two?", "conversation": first["conversation"]})
    assert [m.get("role") for m in tools.bodies[2]["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    detail = (await client.get(f"/api/conversations/{first['conversation']}")).json()
    reply = detail["messages"][1]
    assert [p["type"] for p in reply["parts"]] == ["tool_call", "tool_result", "text"]
    assert len(reply["rounds"]) == 2
    markdown = (
        await client.get(f"/api/conversations/{first['conversation']}/export?format=md")
    ).body.decode()
    assert '**Tool call** `add` `{"a": 2, "b": 3}`' in markdown
    exported = (
        await client.get(f"/api/conversations/{first['conversation']}/export?format=json")
    ).json()
    assert exported["messages"][1]["parts"] == reply["parts"]
    assert "**Tool result** `add`\n\n```\n5\n```" in markdown


async def test_the_demo_model_thinks_calls_the_time_tool_and_answers(settings):
    settings.CHAT_PROVIDER = "demo"
    settings.CHAT_TOOLS = None
    settings.CHAT_DEMO_DELAY = 0
    llm.reset()
    for api in ("responses", "chat"):
        settings.CHAT_API = api
        llm.reset()
        response = await AsgiClient().post(
            "/api/chat", {"message": "what time is it in Tokyo?"}, headers=SSE
        )
        events = parse_sse(response.body)
        names = [name for name, _ in events]
        assert names[0] == "start" and names[-1] == "end"
        first = names.index
        assert first("reasoning") < first("tool_call") < first("tool_result") < first("delta")
        call = events[first("tool_call")][1]
        assert (call["name"], call["arguments"]) == ("current_time", '{"timezone": "Tokyo"}')
        result = events[first("tool_result")][1]
        assert '"timezone": "Asia/Tokyo"' in result["output"] and result["error"] is False
        text = "".join(data["text"] for name, data in events if name == "delta")
        assert text.startswith("It is **") and "Asia/Tokyo" in text
        assert events[-1][1]["usage"]["reasoning_tokens"] > 0


async def test_hosted_web_search_shows_progress_cites_sources_and_is_priced(
    upstream, settings, mini_price
):
    settings.CHAT_API = "responses"
    settings.CHAT_WEB_SEARCH = True
    settings.CHAT_WEB_SEARCH_USD_PER_1000 = Decimal("10")
    text = ["Django 5.2 is an LTS release."]
    cited = {
        "url": "https://www.djangoproject.com/",
        "title": "Django",
        "start_index": 0,
        "end_index": 10,
    }
    stream = wire.responses_stream(
        text,
        response_id="resp_1",
        model=MODEL,
        usage=wire.responses_usage(input_tokens=1000, output_tokens=100),
        web_searches=["django 5.2 lts"],
        citations=[cited],
    )
    upstream.queue(Reply(script=list(stream)))
    response = await AsgiClient().post("/api/chat", {"message": "Is 5.2 LTS?"}, headers=SSE)
    events = parse_sse(response.body)

    assert upstream.bodies[0]["tools"] == [{"type": "web_search"}]
    assert kinds(events) == ["start", "web_search", "web_search", "delta", "citation", "end"]
    assert events[1][1]["status"] == "searching"
    assert events[2][1] == {"id": "ws_0_1", "status": "completed", "query": "django 5.2 lts"}
    assert events[4][1] == cited
    row = await Message.objects.aget(pk=events[0][1]["message"])
    assert [p["type"] for p in row.parts] == ["web_search", "text", "citation"]
    assert row.parts[0]["query"] == "django 5.2 lts" and row.rounds[0]["web_searches"] == 1
    tokens = Decimal("1000") * Decimal("0.40") / 10**6 + Decimal("100") * Decimal("1.60") / 10**6
    assert row.cost == tokens + Decimal("0.01")  # one search at $10 per 1,000
    # Recomputing the cost from the price list keeps the search's price in it.
    recost = await sync_to_async(messages_recost)(messages=Message.objects.filter(pk=row.pk))
    assert (recost.unchanged, recost.changed) == (1, 0)
    # The JSON reply folds the search under way and done into one part.
    upstream.queue(Reply(script=list(stream)))
    folded = (await AsgiClient().post("/api/chat", {"message": "Is 5.2 LTS?"})).json()
    assert folded["parts"][0] == {
        "type": "web_search",
        "id": "ws_0_1",
        "status": "completed",
        "query": "django 5.2 lts",
    }
    assert [p["type"] for p in folded["parts"]] == ["web_search", "text", "citation"]
    counted = [(r.tool, r.runner, r.calls) async for r in DailyToolUsage.objects.all()]
    assert counted == [("web_search", "provider", 2)]


@pytest.mark.usefixtures("mini_price")
async def test_a_turn_that_reaches_the_budget_stops_after_that_round(tools, ada):
    from django.contrib.auth import get_user_model

    from chat.models import Budget

    user = await get_user_model().objects.aget(username="ada")
    await Budget.objects.acreate(user=user, limit_usd=Decimal("0.01"))
    # 30,000 input tokens at $0.40 per million: $0.012, past the $0.01 budget.
    tools.queue(chat_round([], n=1, calls=[ADD], prompt=30_000, completion=10))
    tools.queue(chat_round(["never sent"], n=2))
    reply = (await ada.post("/api/chat", {"message": "2+3?"})).json()

    assert tools.calls == 1  # no second model call
    assert (reply["status"], reply["finish_reason"]) == ("incomplete", "budget_exceeded")
    assert [p["type"] for p in reply["parts"]] == ["tool_call", "tool_result"]
    row = await Message.objects.aget(pk=reply["message"])
    assert row.input_tokens == 30_000 and row.cost == Decimal("0.012016")
    refused = await ada.post("/api/chat", {"message": "and now?"})
    assert refused.status == 429 and refused.json()["error"]["type"] == "budget_exceeded"


async def test_a_round_cut_before_its_usage_chunk_is_estimated_and_flagged(tools):
    tools.queue(chat_round([], n=1, calls=[ADD], prompt=100, completion=10))
    whole = chat_round(["It is 5."], n=2).script
    tools.queue(Reply(script=[frame for frame in whole if not _usage_only(frame)]))
    reply = (await AsgiClient().post("/api/chat", {"message": "2+3?"})).json()

    assert reply["status"] == "completed" and reply["usage_estimated"] is True
    row = await Message.objects.aget(pk=reply["message"])
    first, second = row.rounds
    assert first["usage"]["input_tokens"] == 100 and first["usage_estimated"] is False
    assert second["usage_estimated"] is True and second["usage"]["output_tokens"] > 0
    assert row.input_tokens == 100 + second["usage"]["input_tokens"]


def _usage_only(frame) -> bool:
    """The chunk with no choices that carries a Chat Completions stream's usage."""
    return isinstance(frame, dict) and frame.get("choices") == [] and bool(frame.get("usage"))
