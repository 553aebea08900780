"""Detached, resumable turns (chat/turns/detached.py, chat/turns/log/) in one process:
a reader may leave and come back, several may read, and the model is called once."""

from __future__ import annotations

import asyncio
import re

import pytest

from chat.models import Message
from tests.asgi import AsgiClient, parse_sse
from tests.upstream import Reply, chat_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SSE = {"Accept": "text/event-stream"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
PARTS = ["one ", "two ", "three ", "four ", "five"]


def paced(parts: list[str], pause: float = 0.15) -> list:
    """A reply whose tokens arrive `pause` s apart, so readers can leave between them."""
    script = chat_script(parts, usage=USAGE)
    head, tail = script[:1], script[1:]
    out = list(head)
    for frame in tail:
        out += [pause, frame]
    return out


def frames(body: bytes) -> bytes:
    """An SSE body without its `retry:` line and pings: the turn's own frames."""
    return body.replace(b"retry: 3000\n\n", b"").replace(b": ping\n\n", b"")


def last_id(body: bytes) -> int:
    return int(re.findall(rb"^id: (\d+)$", body, re.M)[-1])


async def eventually_row(message_id: int, *statuses: str, timeout: float = 10) -> Message:
    for _ in range(int(timeout / 0.05)):
        row = await Message.objects.aget(pk=message_id)
        if row.status in statuses:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} is {row.status}, not {statuses}")


async def deferred(client: AsgiClient) -> dict:
    return (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()


async def test_a_reader_that_leaves_resumes_exactly_and_the_model_is_called_once(upstream):
    upstream.queue(Reply(script=paced(PARTS)))
    client = AsgiClient()
    info = await deferred(client)
    url = info["stream_url"]

    # Leaves after retry, start and two deltas; a second tab reads the whole reply.
    first = asyncio.create_task(client.get(url, headers=SSE, disconnect_after_chunks=4))
    whole = asyncio.create_task(client.get(url, headers=SSE))
    left = await first
    seen = last_id(left.body)
    resumed = await client.get(url, headers={**SSE, "Last-Event-ID": str(seen)})
    uninterrupted = await whole
    from_start = await client.get(url, headers=SSE)  # a reload: no Last-Event-ID
    by_query = await client.get(f"{url}?last_event_id=2", headers=SSE)

    assert upstream.calls == 1
    expected = frames(uninterrupted.body)
    assert parse_sse(expected)[-1][0] == "end"
    assert frames(left.body) + frames(resumed.body) == expected  # no gap, no duplicate
    assert frames(from_start.body) == expected
    assert expected.endswith(frames(by_query.body)) and b"id: 3\n" in by_query.body
    assert b"id: 2\n" not in by_query.body
    row = await Message.objects.aget(pk=info["message"])
    assert row.status == "completed" and row.content == "".join(PARTS)
    assert row.total_tokens == 15


async def test_the_turn_goes_on_when_its_only_reader_leaves(upstream, settings):
    settings.CHAT_RESUME_GRACE_SECONDS = 60
    upstream.queue(Reply(script=paced(PARTS, 0.05)))
    client = AsgiClient()
    info = await deferred(client)
    await client.get(info["stream_url"], headers=SSE, disconnect_after_chunks=3)

    row = await eventually_row(info["message"], "completed", "cancelled", "failed")

    assert row.status == "completed" and row.content == "".join(PARTS)
    assert upstream.calls == 1


async def test_a_turn_nobody_reads_for_the_grace_period_is_cancelled(upstream, settings):
    settings.CHAT_RESUME_GRACE_SECONDS = 1
    script = chat_script(["one ", "two"], usage=USAGE)
    script.insert(2, 30.0)  # the rest would take half a minute
    upstream.queue(Reply(script=script))
    client = AsgiClient()
    info = await deferred(client)
    await client.get(info["stream_url"], headers=SSE, disconnect_after_chunks=3)

    row = await eventually_row(info["message"], "completed", "cancelled", "failed")

    assert row.status == "cancelled" and row.content == "one "
    assert upstream.streams[0].closed
    # A later reader gets the stored outcome, never a new model call.
    events = parse_sse((await client.get(info["stream_url"], headers=SSE)).body)
    assert events[-1][0] == "end" and events[-1][1]["status"] == "cancelled"
    assert upstream.calls == 1


async def test_grace_zero_stops_the_turn_when_its_last_reader_leaves(upstream, settings):
    settings.CHAT_RESUME_GRACE_SECONDS = 0
    script = chat_script(["one ", "two"], usage=USAGE)
    script.insert(2, 30.0)
    upstream.queue(Reply(script=script))
    client = AsgiClient()
    info = await deferred(client)
    await client.get(info["stream_url"], headers=SSE, disconnect_after_chunks=3)

    row = await eventually_row(info["message"], "cancelled", "completed", timeout=5)

    assert row.status == "cancelled" and row.content == "one "


async def test_grace_zero_waits_for_the_first_reader_it_was_claimed_for(upstream, settings):
    """The claiming request's reader starts only once its response is under way; a tick
    meanwhile must not take the turn for one whose readers have all left."""
    from chat.access.owners import Owner
    from chat.turns.detached import turn_detach
    from chat.turns.start import turn_claim, turn_start

    settings.CHAT_RESUME_GRACE_SECONDS = 0
    upstream.queue(Reply(script=chat_script(["one ", "two"], usage=USAGE)))
    owner = Owner(anonymous_key="first-reader")
    turn = await turn_start(owner=owner, message="hi", defer=True)
    claimed = await turn_claim(owner=owner, message_id=turn.message_id)
    log = await turn_detach(turn=claimed, key="first-reader", slot=False, user_id=None)
    await asyncio.sleep(1.5)  # longer than a tick of the producers' ticker, with no reader

    body = b"".join([frame async for frame in log.frames_after(0)])

    assert parse_sse(body)[-1][0] == "end"
    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == "completed" and row.content == "one two"


async def test_stop_from_a_second_client_reaches_every_reader(upstream):
    script = chat_script(["one ", "two ", "three"], usage=USAGE)
    script.insert(2, 30.0)
    upstream.queue(Reply(script=script))
    client = AsgiClient()
    info = await deferred(client)
    readers = [asyncio.create_task(client.get(info["stream_url"], headers=SSE)) for _ in "ab"]
    while not (upstream.streams and upstream.streams[0].sent >= 2):
        await asyncio.sleep(0.05)
    other = AsgiClient()
    other.cookies = dict(client.cookies)  # the same person, another device
    assert (await other.post(f"/api/messages/{info['message']}/cancel", {})).status == 202

    bodies = [frames(r.body) for r in await asyncio.wait_for(asyncio.gather(*readers), 5)]

    assert bodies[0] == bodies[1]
    events = parse_sse(bodies[0])
    assert events[-1][0] == "end" and events[-1][1]["status"] == "cancelled"
    row = await Message.objects.aget(pk=info["message"])
    assert row.status == "cancelled" and row.content == "one " and row.output_tokens
    assert upstream.calls == 1


async def test_a_direct_stream_asked_to_be_resumable_names_its_url_and_goes_on(upstream):
    upstream.queue(Reply(script=paced(PARTS, 0.05)))
    client = AsgiClient()
    left = await client.post(
        "/api/chat?stream=resumable", {"message": "hi"}, headers=SSE, disconnect_after_chunks=3
    )
    start = parse_sse(left.body)[0]
    assert start[0] == "start"
    url = start[1]["stream_url"]
    assert url == f"/api/messages/{start[1]['message']}/stream"

    resumed = await client.get(url, headers={**SSE, "Last-Event-ID": str(last_id(left.body))})

    events = parse_sse(frames(left.body) + frames(resumed.body))
    assert "".join(d["text"] for n, d in events if n == "delta") == "".join(PARTS)
    assert events[-1][0] == "end" and events[-1][1]["status"] == "completed"
    assert upstream.calls == 1


async def test_a_plain_direct_stream_still_stops_when_its_client_leaves(upstream):
    script = chat_script(["one ", "two"], usage=USAGE)
    script.insert(2, 30.0)
    upstream.queue(Reply(script=script))
    left = await AsgiClient().post(
        "/api/chat", {"message": "hi"}, headers=SSE, disconnect_after_chunks=3
    )
    assert "stream_url" not in parse_sse(left.body)[0][1]
    row = await Message.objects.aget(pk=parse_sse(left.body)[0][1]["message"])
    assert row.status == "cancelled" and row.content == "one "


async def test_a_bad_last_event_id_is_a_json_400(upstream):
    client = AsgiClient()
    info = await deferred(client)
    response = await client.get(f"{info['stream_url']}?last_event_id=x", headers=SSE)
    assert response.status == 400 and response.json()["error"]["type"] == "invalid_request"
    assert upstream.calls == 0


@pytest.mark.asyncio
async def test_a_reader_past_the_end_of_a_log_copy_that_lost_frames_still_gets_the_end():
    """Redis restarted empty mid-reply: another worker's copy of the log holds only the
    final event its tail added, at a position below where a resuming reader left off.
    That reader gets the final event, not an empty stream it would reconnect to forever."""
    from chat.streams import StreamEvent
    from chat.turns.log import TurnLog

    copy = TurnLog("chat:turn:c:1")
    copy.append(StreamEvent("end", {"status": "completed"}))
    assert copy.closed

    resumed = b"".join([frame async for frame in copy.frames_after(61)])
    events = [event async for event in copy.events_after(61)]

    assert parse_sse(resumed)[-1] == ("end", {"status": "completed"})
    assert [event.type for event in events] == ["end"]
    # A reader that already had the last frame gets nothing more.
    assert [frame async for frame in copy.frames_after(1)] == []
