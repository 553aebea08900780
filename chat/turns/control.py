"""Stopping turns: on request (any worker), at shutdown, and after a worker died."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from chat.access.owners import Owner
from chat.errors import not_found
from chat.models import Message
from chat.spend.ledger import message_finalize
from chat.turns import batching, relay
from chat.turns.finish import release_connection
from chat.turns.recover import turn_interrupt

logger = logging.getLogger("chat")
Status = Message.Status
STALE = "The server stopped before this reply was finished."

# How long shutdown waits for the turns it interrupted to be recorded, and then for the
# writes still queued for them.
SHUTDOWN_DRAIN_SECONDS = 10.0

# Turns being streamed by this process, so shutdown can wait until each row is finished.
in_flight: set[str] = set()  # the stop keys of the turns this process streams
# Those of them that shutdown stopped: recorded `incomplete` (`interrupted`), not
# `cancelled`, since nobody asked for them to stop.
interrupting: set[str] = set()


async def _in_flight_after(timeout: float) -> int:
    """Wait (up to `timeout` s) for this process's turns to be recorded; how many are left."""
    deadline = time.monotonic() + timeout
    while in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return len(in_flight)


async def turns_drain(*, deadline: float, timeout: float = SHUTDOWN_DRAIN_SECONDS) -> int:
    """Let the turns this process still streams finish for up to `deadline` s, then
    interrupt the rest and wait (up to `timeout` s) until each is recorded (`incomplete`,
    error `interrupted`, text and estimated usage kept); returns how many are left. For
    server shutdown, after the server's own grace period: uvicorn waits for its
    connections, not for detached turns, and cancels only its own task, not the one
    Django streams in, so without this the event loop would close under running turns."""
    if not await _in_flight_after(deadline):
        return 0
    for stop_key in list(in_flight):
        interrupting.add(stop_key)
        relay.request_stop(stop_key)
    return await _in_flight_after(timeout)


def cancel_key(conversation_id: uuid.UUID, message_id: int) -> str:
    """The cache key that asks whichever worker streams this turn to stop. The random
    conversation id makes it unique to this database: a message id alone comes round
    again when a database is recreated (tests, a reset dev setup) while the cache keeps
    a stop asked for its namesake, which would stop a new turn at its first token."""
    return f"chat:cancel:{conversation_id}:{message_id}"


async def turn_cancel(*, owner: Owner, message_id: int) -> Message:
    """Ask the worker streaming this turn to stop (works across workers via the cache).
    A turn nobody has claimed yet is cancelled on the spot."""
    message: Message | None = (
        await owner.messages().filter(pk=message_id, role=Message.Role.ASSISTANT).afirst()
    )
    if message is None:
        raise not_found("message")
    cancelled_unclaimed = message.status == Status.PENDING and await sync_to_async(
        message_finalize
    )(message.pk, unfinished=[Status.PENDING], status=Status.CANCELLED, finished_at=timezone.now())
    if not cancelled_unclaimed:
        # Streaming, or claimed between our read and our update: stop whoever streams it.
        await message.arefresh_from_db()
        if message.status == Status.STREAMING:
            stop_key = cancel_key(message.conversation_id, message.pk)
            await cache.aset(stop_key, True, timeout=600)
            relay.request_stop(stop_key)
    await message.arefresh_from_db()
    return message


def turns_expire_stale(*, older_than: timedelta) -> int:
    """Mark turns whose worker died as `incomplete`, keeping whatever they hold: streaming
    for longer than `older_than` since they were claimed (a turn that waited long as
    `pending` and was claimed just now is live), or never opened for that long. Returns
    how many. Idempotent, so every worker may run it at start-up."""
    now = timezone.now()
    cutoff = now - older_than
    claimed_long_ago = Q(status=Status.STREAMING) & (
        Q(claimed_at__lt=cutoff) | Q(claimed_at__isnull=True, created_at__lt=cutoff)
    )
    never_opened = Q(status=Status.PENDING, created_at__lt=cutoff)
    stale = Message.objects.filter(claimed_long_ago | never_opened).select_related("conversation")
    expired = 0
    for row in list(stale):
        if row.status == Status.STREAMING:  # the model was called: usage is estimated
            expired += turn_interrupt(row, reason="stale", message=STALE).finished
            continue
        expired += message_finalize(
            row.pk,
            status=Status.INCOMPLETE,
            finish_reason="stale",
            error_type="stale",
            error_message=STALE,
            finished_at=now,
        )
    # Run at start-up, outside any request: nothing else would ever close this connection.
    release_connection()
    return expired


async def turns_sweep_stale(*, when: str) -> None:
    """`turns_expire_stale` for turns older than CHAT_STALE_TURN_SECONDS, logging how many
    (`when`: at start-up, in the periodic sweep). Never raises: a broken database must stop
    neither the server's start nor the later sweeps."""
    try:
        older_than = timedelta(seconds=settings.CHAT_STALE_TURN_SECONDS)
        count = await sync_to_async(turns_expire_stale)(older_than=older_than)
        if count:
            logger.warning("marked %s stale replies incomplete %s", count, when)
    except Exception:
        logger.exception("could not expire stale replies %s", when)


async def turns_shutdown(*, timeout: float = SHUTDOWN_DRAIN_SECONDS) -> None:
    """At server shutdown: turns still running get `CHAT_SHUTDOWN_SECONDS` to finish, the
    rest are recorded as interrupted before the event loop goes away; then wait for starts
    and finishes still queued for a group write (`batching`). A turn left unrecorded even
    so is finished by the next start-up on this host (`chat.turns.recover`)."""
    left = await turns_drain(deadline=settings.CHAT_SHUTDOWN_SECONDS, timeout=timeout)
    if left:
        logger.warning("%s replies still unfinished at shutdown", left)
    if not await batching.settled(timeout=timeout):
        logger.warning("database writes still queued at shutdown")
