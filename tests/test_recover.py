"""chat/turns/recover.py: which turns a sweep takes for dead. A dead producer's turns are
found however many live ones stream beside them (this host's other workers, other hosts,
more than a sweep's batch), and a deferred turn that a process took and died with is
finished within a lease period instead of the stale sweep's hour."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from chat.models import Message
from chat.spend.ledger import ledger_verify
from chat.turns import turn_start, turns_abandon_unopened, turns_recover_at_startup
from chat.turns.log import redis_streams
from chat.turns.recover import SWEEP_BATCH, turns_recover_lapsed
from chat.turns.workers import worker_id
from tests.test_scale import anonymous_visitor

pytestmark = pytest.mark.django_db(transaction=True)
Status = Message.Status
HOST = socket.gethostname()


def dead_worker() -> str:
    """The producer id of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{HOST}:{proc.pid}:dead0001"


async def streaming_rows(
    conversation_id: object, workers: list[str], lease: timedelta
) -> list[int]:
    """One streaming assistant row per entry of `workers`, claimed now, its lease on the
    row lapsing `lease` from now (negative: already lapsed)."""
    now = timezone.now()
    rows = await Message.objects.abulk_create(
        Message(
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            status=Status.STREAMING,
            model="fake-model",
            api="chat",
            claimed_at=now,
            worker=worker,
            lease_until=now + lease,
        )
        for worker in workers
    )
    return [row.pk for row in rows]


async def statuses(ids: list[int]) -> set[str]:
    return {
        status
        async for status in Message.objects.filter(pk__in=ids).values_list("status", flat=True)
    }


@pytest.mark.asyncio
async def test_a_restart_finds_its_dead_turns_behind_more_than_a_batch_of_live_ones():
    _, owner = anonymous_visitor()
    turn = await turn_start(owner=owner, message="hi", defer=True)
    # Older rows first: a sweep taking the first batch of streaming rows sees only these.
    alive_here = f"{HOST}:{os.getppid()}:alive001"  # a sibling worker, running
    elsewhere = f"other-host:{os.getpid()}:alive002"  # another host's: its lease says
    live = await streaming_rows(
        turn.conversation_id, [alive_here, elsewhere] * (SWEEP_BATCH // 2 + 10), timedelta(hours=1)
    )
    dead = await streaming_rows(turn.conversation_id, [dead_worker()] * 3, timedelta(hours=1))

    await turns_recover_at_startup()

    assert await statuses(dead) == {Status.INCOMPLETE}
    assert await statuses(live) == {Status.STREAMING}
    finished = [row async for row in Message.objects.filter(pk__in=dead)]
    assert {(row.error_type, row.usage_estimated) for row in finished} == {("interrupted", True)}
    assert await sync_to_async(ledger_verify)() == []


@pytest.mark.asyncio
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="leases in Redis need REDIS_URL")
async def test_the_lapsed_sweep_reaches_a_dead_worker_behind_a_batch_of_live_ones_in_redis():
    """With Redis a live worker renews its lease there, not on its rows: their row leases
    lapse while they stream, and must not hide a dead worker's turns."""
    _, owner = anonymous_visitor()
    turn = await turn_start(owner=owner, message="hi", defer=True)
    alive = [f"other-host:{n}:alive{n:03}" for n in range(3)]
    for worker in alive:
        await redis_streams.worker_lease_renew(worker, 600)
    live = await streaming_rows(
        turn.conversation_id, alive * (SWEEP_BATCH // 3 + 10), -timedelta(seconds=30)
    )
    dead = await streaming_rows(
        turn.conversation_id, ["other-host:1:gone0001"] * 2, -timedelta(seconds=30)
    )

    assert await turns_recover_lapsed() == 2

    assert await statuses(dead) == {Status.INCOMPLETE}
    assert await statuses(live) == {Status.STREAMING}


@pytest.mark.asyncio
async def test_an_unopened_turn_of_a_dead_process_is_finished_after_a_lease_period():
    _, owner = anonymous_visitor()
    taken_long_ago = timezone.now() - timedelta(seconds=settings.CHAT_LEASE_SECONDS + 5)
    abandoned = await turn_start(owner=owner, message="hi", defer=True)
    just_taken = await turn_start(owner=owner, message="again", defer=True)
    ours = await turn_start(owner=owner, message="mine", defer=True)
    assert (
        await Message.objects.filter(pk=ours.message_id).values_list("worker", flat=True).aget()
        == worker_id()
    )  # who took it is recorded with the row
    gone = dead_worker()
    await Message.objects.filter(pk=abandoned.message_id).aupdate(
        worker=gone, created_at=taken_long_ago
    )
    # Its 201 may be in flight to a client that opens it in a moment.
    await Message.objects.filter(pk=just_taken.message_id).aupdate(worker=gone)
    # Taken by a live process: its client may open it any time (the stale sweep's case).
    await Message.objects.filter(pk=ours.message_id).aupdate(created_at=taken_long_ago)

    assert await turns_abandon_unopened() == 1

    row = await Message.objects.aget(pk=abandoned.message_id)
    assert (row.status, row.error_type, row.finish_reason) == (
        Status.INCOMPLETE,
        "interrupted",
        "interrupted",
    )
    # The model was never called: nothing billed, nothing estimated.
    assert (row.output_tokens, row.usage_estimated, row.cost) == (None, False, None)
    assert await statuses([just_taken.message_id, ours.message_id]) == {Status.PENDING}
    assert await sync_to_async(ledger_verify)() == []
    assert await turns_abandon_unopened() == 0  # once
