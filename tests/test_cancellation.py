"""Cancellation at the turn's edges: every claimed row gets finished,
whenever the client leaves."""

import asyncio
import gc
import uuid

import pytest
from django.core.cache import cache

from chat.access.owners import Owner
from chat.models import Message
from chat.spend import limits
from chat.turns import relay, turn_cancel, turn_claim, turn_start, turn_stream, turns_expire_stale
from chat.turns.control import cancel_key
from chat.views import started
from tests.upstream import Reply, chat_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

OWNER = Owner(anonymous_key="tester")
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def assistant():
    return await Message.objects.aget(role="assistant")


async def wait_until_finished(message_id: int) -> Message:
    for _ in range(100):
        row = await Message.objects.aget(pk=message_id)
        if row.status not in ("pending", "streaming"):
            return row
        await asyncio.sleep(0.02)
    return row


async def test_consumer_leaving_at_the_start_event_still_finishes_the_row(upstream):
    turn = await turn_start(owner=OWNER, message="hi")
    events = turn_stream(turn=turn)
    first = await anext(events)
    assert first.type == "start"
    await events.aclose()
    row = await assistant()
    assert row.status == "cancelled" and row.finished_at is not None
    assert upstream.calls == 0


async def test_client_leaving_during_turn_start_leaves_no_claimed_row(upstream):
    start = asyncio.ensure_future(turn_start(owner=OWNER, message="hi"))
    await asyncio.sleep(0)  # the insert is on its way to the database thread
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    row = await wait_until_finished((await assistant()).pk)
    assert row.status == "cancelled"
    assert upstream.calls == 0


async def test_client_leaving_during_the_claim_leaves_no_claimed_row(upstream):
    turn = await turn_start(owner=OWNER, message="hi", defer=True)
    claim = asyncio.ensure_future(turn_claim(owner=OWNER, message_id=turn.message_id))
    await asyncio.sleep(0.001)
    claim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await claim
    row = await wait_until_finished(turn.message_id)
    # Either the claim had not happened (still pending, claimable later) or it was undone.
    assert row.status in ("pending", "cancelled")
    assert upstream.calls == 0


async def test_a_response_dropped_before_its_body_is_read_still_settles(upstream, settings):
    """Django never iterates the body when the client is gone by the time the view
    returns: the started turn is closed by the loop's async-generator finaliser."""
    settings.CHAT_MAX_CONCURRENT_STREAMS = 1
    key = f"dropped-{id(upstream)}"
    turn = await turn_start(owner=OWNER, message="hi")
    slot = await limits.stream_acquire(key)
    events = await started(
        limits.guarded(turn_stream(turn=turn), key=key, message_id=turn.message_id, slot=slot)
    )
    del events
    gc.collect()
    row = await wait_until_finished(turn.message_id)
    assert row.status == "cancelled"
    for _ in range(50):  # the slot is given back by the same finaliser
        if not await cache.aget(f"chat:streams:{key}"):
            break
        await asyncio.sleep(0.02)
    assert not await cache.aget(f"chat:streams:{key}")


async def test_stop_that_loses_the_race_with_the_claim_still_stops_the_stream(upstream):
    script = chat_script(["one ", "two"], usage=USAGE)
    script.insert(2, 30.0)
    upstream.queue(Reply(script=script))
    turn = await turn_start(owner=OWNER, message="hi", defer=True)
    claimed = await turn_claim(owner=OWNER, message_id=turn.message_id)
    stream = turn_stream(turn=claimed)
    events = [await anext(stream), await anext(stream)]  # start, "one "
    # The canceller read the row while it was still pending, then lost the race.
    stale = await Message.objects.aget(pk=turn.message_id)
    stale.status = "pending"

    class StaleRead:
        def filter(self, **kwargs):
            return self

        async def afirst(self):
            return stale

    class StaleOwner:
        def messages(self):
            return StaleRead()

    await turn_cancel(owner=StaleOwner(), message_id=turn.message_id)
    events += [event async for event in stream]
    assert events[-1].type == "end" and events[-1].data["status"] == "cancelled"
    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == "cancelled" and row.content == "one "


async def test_an_unexpected_failure_is_recorded_as_failed_with_an_error_event(upstream):
    upstream.queue(Reply(script=[*chat_script(["par"])[:2], RuntimeError("surprise")]))
    turn = await turn_start(owner=OWNER, message="hi")
    events = [event async for event in turn_stream(turn=turn)]
    assert events[-1].type == "error"
    assert "surprise" not in str(events[-1].data)
    row = await assistant()
    assert row.status == "failed" and row.content == "par"
    assert row.error_type == "upstream_error"


async def test_a_turn_claimed_late_is_not_swept_while_it_streams(upstream):
    """Staleness counts from the claim: a deferred turn opened two hours after it was
    created is live, and sweeping it would lose its usage."""
    from datetime import timedelta

    from asgiref.sync import sync_to_async
    from django.utils import timezone

    turn = await turn_start(owner=OWNER, message="hi", defer=True)
    two_hours_ago = timezone.now() - timedelta(hours=2)
    await Message.objects.filter(pk=turn.message_id).aupdate(created_at=two_hours_ago)
    await turn_claim(owner=OWNER, message_id=turn.message_id)
    swept = await sync_to_async(turns_expire_stale)(older_than=timedelta(hours=1))
    assert swept == 0
    assert (await Message.objects.aget(pk=turn.message_id)).status == "streaming"

    await Message.objects.filter(pk=turn.message_id).aupdate(claimed_at=two_hours_ago)
    swept = await sync_to_async(turns_expire_stale)(older_than=timedelta(hours=1))
    assert swept == 1
    assert (await Message.objects.aget(pk=turn.message_id)).status == "incomplete"


async def test_a_stop_left_in_the_cache_for_a_namesake_turn_does_not_stop_this_one(upstream):
    """Message ids come round again when a database is recreated (a test run, a reset dev
    setup) while a shared cache (Redis) still holds the stops asked for their namesakes."""

    async def streamed(stop_for_namesake: bool) -> tuple[list, Message]:
        script = chat_script(["all ", "of ", "it"], usage=USAGE)
        script.insert(2, relay.CANCEL_POLL_SECONDS * 2.5)  # long enough to be polled
        upstream.queue(Reply(script=script))
        turn = await turn_start(owner=OWNER, message="hi")
        conversation = uuid.uuid4() if stop_for_namesake else turn.conversation_id
        await cache.aset(cancel_key(conversation, turn.message_id), True, timeout=60)
        events = [event async for event in turn_stream(turn=turn)]
        return events, await Message.objects.aget(pk=turn.message_id)

    events, row = await streamed(stop_for_namesake=True)
    assert events[-1].data["status"] == "completed" and row.content == "all of it"
    # The same stop, asked for this very turn (as another worker's cancel does), stops it.
    events, row = await streamed(stop_for_namesake=False)
    assert events[-1].data["status"] == "cancelled" and row.content == "all "
