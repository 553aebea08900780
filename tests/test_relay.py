"""Paced frames (chat/turns/relay.py, `CHAT_STREAM_FRAME_MS`): a reply's deltas go out at
most one frame per interval, the first at once, and anything else (the end, an error, a
stop) hands on the text gathered before it at once, in order; in every encoding (direct
SSE, NDJSON, a deferred turn's log and its resuming readers), with the stored text whole.

No timing is asserted: the bounds below hold however fast or slow the machine is (a frame
interval far longer than the test, or a count measured against the test's own clock)."""

from __future__ import annotations

import asyncio
import re

import pytest

from chat.access.owners import Owner
from chat.llm import wire
from chat.models import Message
from chat.turns import relay, turn_start, turn_stream
from chat.turns.control import cancel_key
from tests.asgi import AsgiClient, parse_ndjson, parse_sse
from tests.upstream import MODEL, Reply, chat_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

OWNER = Owner(anonymous_key="tester")
SSE = {"Accept": "text/event-stream"}
NDJSON = {"Accept": "application/x-ndjson"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
# Text with what an encoder could get wrong, cut into tokens.
PARTS = [f"{n}{piece}" for n, piece in enumerate(["é ", "\n", '"q" ', "🙂", "\r\n", " x"] * 4)]
TEXT = "".join(PARTS)
# Longer than any test runs: a delta after the first waits for an event that is not one.
NEVER_MS = 600_000.0


def spaced(parts: list[str], gap: float) -> list:
    """A Chat Completions reply whose tokens arrive `gap` seconds apart."""
    return with_gaps(chat_script(parts, usage=USAGE), gap)


def with_gaps(script: list, gap: float) -> list:
    """`script` with a pause of `gap` seconds before each frame after the first."""
    out = list(script[:1])
    for frame in script[1:]:
        out += [gap, frame]
    return out


def deltas(events: list[tuple[str, dict]]) -> list[str]:
    return [data["text"] for name, data in events if name == "delta"]


async def test_one_delta_frame_per_interval_and_the_text_whole_in_every_encoding(
    upstream, settings
):
    """Tokens 10 ms apart with 40 ms frames: fewer frames than tokens, at most one per
    interval of the test's own clock after the first, and the text whole and in order."""
    settings.CHAT_STREAM_FRAME_MS = 40.0
    interval = settings.CHAT_STREAM_FRAME_MS / 1000
    client = AsgiClient()
    loop = asyncio.get_running_loop()
    for accept in ("sse", "ndjson", "deferred"):
        upstream.queue(Reply(script=spaced(PARTS, 0.01)))
        began = loop.time()
        if accept == "sse":
            events = parse_sse(
                (await client.post("/api/chat", {"message": "hi"}, headers=SSE)).body
            )
        elif accept == "ndjson":
            body = (await client.post("/api/chat", {"message": "hi"}, headers=NDJSON)).body
            events = [(line.pop("type"), line) for line in parse_ndjson(body)]
        else:
            created = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
            events = parse_sse((await client.get(created["stream_url"], headers=SSE)).body)
        elapsed = loop.time() - began

        texts = deltas(events)
        assert "".join(texts) == TEXT, accept
        assert events[-1][0] == "end" and events[-1][1]["status"] == "completed", accept
        # After the first, each delta frame waited for the interval since the one before.
        assert len(texts) <= 1 + elapsed / interval + 1e-9, (accept, len(texts), elapsed)
        row = await Message.objects.aget(pk=events[0][1]["message"])
        assert row.content == TEXT
    assert upstream.calls == 3


async def test_the_first_delta_goes_out_before_the_second_arrives(upstream, settings):
    settings.CHAT_STREAM_FRAME_MS = NEVER_MS
    upstream.queue(Reply(script=spaced(["first", " second"], 0.2)))
    turn = await turn_start(owner=OWNER, message="hi")
    events = turn_stream(turn=turn)
    assert (await anext(events)).type == "start"

    first = await anext(events)

    assert first.type == "delta" and first.data == {"text": "first"}
    sent = upstream.streams[0].sent
    assert sent == 2  # the role chunk and the first token: the second not yet written
    rest = [event async for event in events]
    assert [e.data["text"] for e in rest if e.type == "delta"] == [" second"]
    assert upstream.streams[0].sent > sent


async def test_the_end_hands_on_the_gathered_text_at_once(upstream, settings):
    """With an interval longer than the test, the end is what sends the gathered text: the
    first token alone, every other in one frame, then `end`."""
    settings.CHAT_STREAM_FRAME_MS = NEVER_MS
    upstream.queue(Reply(script=spaced(PARTS, 0.001)))
    client = AsgiClient()

    async with asyncio.timeout(NEVER_MS / 1000 / 2):
        reply = await client.post("/api/chat", {"message": "hi"}, headers=SSE)

    events = parse_sse(reply.body)
    assert [name for name, _ in events] == ["start", "delta", "delta", "end"]
    assert deltas(events) == [PARTS[0], "".join(PARTS[1:])]
    row = await Message.objects.aget(pk=events[0][1]["message"])
    assert row.status == "completed" and row.content == TEXT


async def test_an_upstream_error_hands_on_the_gathered_text_first(upstream, settings):
    settings.CHAT_STREAM_FRAME_MS = NEVER_MS
    script = chat_script(["one", " two", " three"])[:4]  # the role, then the three tokens
    upstream.queue(Reply(script=with_gaps([*script, wire.api_error("overloaded")], 0.01)))
    client = AsgiClient()

    async with asyncio.timeout(NEVER_MS / 1000 / 2):
        reply = await client.post("/api/chat", {"message": "hi"}, headers=NDJSON)

    lines = parse_ndjson(reply.body)
    assert [line["type"] for line in lines] == ["start", "delta", "delta", "error"]
    assert "".join(line["text"] for line in lines if line["type"] == "delta") == "one two three"
    row = await Message.objects.aget(pk=lines[0]["message"])
    assert row.status == "failed" and row.content == "one two three"


async def test_a_stop_mid_gathering_acts_at_once_and_keeps_the_gathered_text(upstream, settings):
    settings.CHAT_STREAM_FRAME_MS = NEVER_MS
    script = with_gaps(chat_script(["one", " two", " three"], usage=USAGE)[:4], 0.01)
    upstream.queue(Reply(script=[*script, 3600.0]))  # then a model that goes quiet
    turn = await turn_start(owner=OWNER, message="hi")
    events = turn_stream(turn=turn)
    assert (await anext(events)).type == "start"
    assert (await anext(events)).data == {"text": "one"}
    rest = asyncio.create_task(_collect(events))
    while upstream.streams[0].sent < 4:  # " two" and " three" are being gathered
        await asyncio.sleep(0.01)

    relay.request_stop(cancel_key(turn.conversation_id, turn.message_id))
    async with asyncio.timeout(NEVER_MS / 1000 / 2):
        after = await rest

    assert [(e.type, e.data.get("text")) for e in after[:1]] == [("delta", " two three")]
    assert after[-1].type == "end" and after[-1].data["status"] == "cancelled"
    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == "cancelled" and row.content == "one two three"


async def test_a_tool_call_hands_on_the_text_before_it_and_the_parts_are_whole(upstream, settings):
    """Reasoning and text gathered in one frame each (in their order), then the call as it
    starts, its result, and the next round's text."""
    settings.CHAT_STREAM_FRAME_MS = NEVER_MS
    settings.CHAT_TOOLS = ["tests.tool_functions.add"]
    call = wire.WireToolCall("call_a", "add", ['{"a": 2,', ' "b": 3}'])
    first = wire.chat_stream(
        ["Let ", "me ", "add."],
        completion_id="chatcmpl-1",
        model=MODEL,
        usage=wire.chat_usage(prompt_tokens=10, completion_tokens=5),
        reasoning=["Sum ", "it ", "up."],
        tool_calls=[call],
    )
    upstream.queue(Reply(script=with_gaps(list(first), 0.005)))
    upstream.queue(Reply(script=spaced(["It ", "is ", "5."], 0.005)))
    client = AsgiClient()

    async with asyncio.timeout(NEVER_MS / 1000 / 2):
        events = parse_sse((await client.post("/api/chat", {"message": "2+3?"}, headers=SSE)).body)

    names = [name for name, _ in events]
    assert names == [
        "start",
        "reasoning",  # the first delta of the reply, at once
        "reasoning",  # the rest of the reasoning, gathered
        "delta",  # then the text gathered behind it, as its own frame
        "tool_call",
        "tool_result",
        "delta",  # the second round's text, gathered
        "end",
    ]
    assert "".join(d["text"] for n, d in events if n == "reasoning") == "Sum it up."
    assert [d["text"] for n, d in events if n == "delta"] == ["Let me add.", "It is 5."]
    row = await Message.objects.aget(pk=events[0][1]["message"])
    assert row.content == "Let me add.It is 5."
    assert [p["type"] for p in row.parts] == [
        "reasoning",
        "text",
        "tool_call",
        "tool_result",
        "text",
    ]
    assert row.parts[0]["text"] == "Sum it up."


async def test_a_consumer_cancelled_mid_gathering_still_stores_the_gathered_text(
    upstream, settings
):
    """A direct stream whose client leaves (Django cancels the body) while tokens wait for
    their frame: the row keeps every token the model sent."""
    settings.CHAT_STREAM_FRAME_MS = NEVER_MS
    script = with_gaps(chat_script(["one", " two", " three"], usage=USAGE)[:4], 0.01)
    upstream.queue(Reply(script=[*script, 3600.0]))
    turn = await turn_start(owner=OWNER, message="hi")
    events = turn_stream(turn=turn)
    assert (await anext(events)).type == "start"
    assert (await anext(events)).data == {"text": "one"}
    rest = asyncio.create_task(_collect(events))
    while upstream.streams[0].sent < 4:
        await asyncio.sleep(0.01)

    rest.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rest

    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == "cancelled" and row.content == "one two three"
    assert upstream.streams[0].closed


async def _collect(events) -> list:
    return [event async for event in events]


async def test_a_paced_deferred_turn_resumes_exactly_from_every_frame(upstream, settings):
    settings.CHAT_STREAM_FRAME_MS = 30.0
    upstream.queue(Reply(script=spaced(PARTS, 0.01)))
    client = AsgiClient()
    created = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    url = created["stream_url"]
    whole = (await client.get(url, headers=SSE)).body
    ids = [int(n) for n in re.findall(rb"^id: (\d+)$", whole, re.M)]
    events = parse_sse(whole)
    assert "".join(deltas(events)) == TEXT

    for seen in ids[:-1]:
        resumed = parse_sse(
            (await client.get(url, headers={**SSE, "Last-Event-ID": str(seen)})).body
        )
        # What the reader had, then what it resumes with: every token once, in order.
        assert "".join(deltas(events[:seen] + resumed)) == TEXT, seen
        assert resumed[-1][0] == "end"
    assert upstream.calls == 1
    row = await Message.objects.aget(pk=created["message"])
    assert row.status == "completed" and row.content == TEXT
