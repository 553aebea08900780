"""Finishing the turns of a producer that died: `incomplete`, error `interrupted`, the
text as far as it reached (its log in Redis, or the row's last checkpoint), usage
estimated from the prompt and that text and flagged so, its cost, and the usage ledger
(so the budgets) counted once, by `message_finalize`, however many workers try at once.

Every worker sweeps now and then for turns whose lease lapsed (`chat.turns.lease`), and at
start-up for the turns its own previous life left (same host, a process that is gone): a
restarted process does not wait for the lease to lapse.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from chat import llm
from chat.errors import ChatError
from chat.models import Message
from chat.spend.budgets import budget_spent_changed
from chat.spend.counters import run_cache_ops
from chat.spend.ledger import message_finalize
from chat.spend.prices import cost_of, price_now
from chat.streams import EndData
from chat.text import storable
from chat.turns.finish import INTERRUPTED, release_connection, usage_estimate
from chat.turns.lease import leases_held
from chat.turns.log import log_key, redis_streams
from chat.turns.selectors import stored_end_data
from chat.turns.start import turn_of
from chat.turns.workers import worker_gone, worker_host_prefix

logger = logging.getLogger("chat")
Status = Message.Status
# Turns recovered per sweep (the next sweep takes the rest).
SWEEP_BATCH = 100
NOT_STARTED = "The server that took this reply stopped before it was started."


@dataclass(frozen=True, slots=True)
class Recovered:
    data: EndData | None  # the stored end data (None: no such row)
    finished: bool = False  # by this call
    user_id: int | None = None  # whose budget it counts against


def _recover(message_id: int, text: str) -> Recovered:
    """Finish `message_id` as interrupted if it is still streaming."""
    try:
        row = Message.objects.select_related("conversation").filter(pk=message_id).first()
        if row is None:
            return Recovered(None)
        if row.status != Status.STREAMING:
            return Recovered(stored_end_data(row))
        return turn_interrupt(row, text=text)
    finally:
        release_connection()


def turn_interrupt(
    row: Message, *, text: str = "", reason: str = "interrupted", message: str = INTERRUPTED
) -> Recovered:
    """Finish a streaming `row` (its conversation selected with it) whose producer is
    gone: `incomplete`, error `reason`, usage estimated, cost and ledger, once."""
    now = timezone.now()
    # The longer of what the caller read (a log) and the row's last checkpoint.
    text = text if len(text) > len(row.content) else row.content
    # The model was called (the turn was claimed): its prompt was billed, and the text.
    try:
        usage = usage_estimate(turn_of(row), text)
    except ChatError:  # a row from before its api was stored: the text alone
        usage = llm.estimate_usage(prompt="", reply=text)
    price = price_now(row.model, now)
    started = row.claimed_at or row.created_at
    finished = message_finalize(
        row.pk,
        unfinished=[Status.STREAMING],
        status=Status.INCOMPLETE,
        content=storable(text),
        finish_reason=reason,
        error_type=reason,
        error_message=message,
        cost=cost_of(usage, price) if price is not None else None,
        duration_ms=int((now - started).total_seconds() * 1000),
        finished_at=now,
        **usage.as_dict(),
        usage_estimated=True,
    )
    row.refresh_from_db()
    return Recovered(stored_end_data(row), finished, row.conversation.owner_id)


async def turn_recover(*, message_id: int, text: str = "") -> EndData | None:
    """Finish a turn whose producer died (`text`: what a reader has of it); returns its
    stored end data, whoever finished it."""
    recovered = await sync_to_async(_recover)(message_id, text)
    if recovered.finished:
        await _spent_changed(recovered.user_id)
    return recovered.data


async def _spent_changed(user_id: int | None) -> None:
    """Their budget reads the ledger again (the turn just counted is in it)."""
    if user_id is not None:
        with contextlib.suppress(Exception):  # a cache outage: the cached sums expire
            await run_cache_ops(budget_spent_changed, user_id)


def _lapsed_workers() -> list[str]:
    """The producers with streaming turns whose lease on the row lapsed."""
    try:
        found = (
            Message.objects.filter(status=Status.STREAMING, lease_until__lt=timezone.now())
            .exclude(worker__isnull=True)
            .order_by()  # Message's default order would defeat DISTINCT
            .values_list("worker", flat=True)
            .distinct()
        )
        return [worker for worker in found if worker]
    finally:
        release_connection()


def _lapsed(workers: list[str], mine: set[int]) -> list[tuple[int, str, str]]:
    """Streaming turns of `workers` whose lease on the row lapsed (not those this loop
    produces): (id, conversation id, worker)."""
    try:
        rows = (
            Message.objects.filter(
                status=Status.STREAMING, lease_until__lt=timezone.now(), worker__in=workers
            )
            .exclude(pk__in=mine)
            .values_list("pk", "conversation_id", "worker")[:SWEEP_BATCH]
        )
        return [(pk, str(conversation), worker or "") for pk, conversation, worker in rows]
    finally:
        release_connection()


async def turns_recover_lapsed() -> int:
    """Finish the turns whose producer stopped renewing its lease (with Redis: whose
    worker's lease in Redis lapsed); returns how many. Never raises.

    Producers first, then their turns: with Redis a live worker's rows keep their first
    lease only (it renews in Redis), so a batch of lapsed rows taken blindly could be
    all live workers' and never reach a dead one's."""
    try:
        workers = await sync_to_async(_lapsed_workers)()
        if workers and settings.REDIS_URL:
            try:
                alive = await redis_streams.workers_alive(sorted(workers))
            except Exception:
                # Which workers live is not known: leave their turns to the next sweep.
                logger.warning("Redis unreachable: lapsed turn leases left for later")
                return 0
            workers = [worker for worker in workers if worker not in alive]
        if not workers:
            return 0
        return await _recover_rows(await sync_to_async(_lapsed)(workers, leases_held()))
    except Exception:
        logger.exception("could not recover interrupted turns")
        return 0


async def _recover_rows(rows: list[tuple[int, str, str]]) -> int:
    texts = {}
    if settings.REDIS_URL:
        for message_id, conversation_id, _ in rows:
            with contextlib.suppress(Exception):  # then the row's checkpoint is all there is
                key = log_key(conversation_id, message_id)
                texts[message_id] = await redis_streams.log_text_remote(key)
    recovered = 0
    for message_id, _, _ in rows:
        outcome = await sync_to_async(_recover)(message_id, texts.get(message_id, ""))
        if outcome.finished:
            recovered += 1
            await _spent_changed(outcome.user_id)
    if recovered:
        logger.warning("finished %s interrupted replies (their worker stopped)", recovered)
    return recovered


def _gone_here(status: str) -> list[str]:
    """This host's producers with turns in `status` whose process is gone. Asked of the
    database by this host's prefix, so however many turns other hosts, or this host's
    live workers, are streaming, a dead process's are never crowded out of the batch."""
    found = (
        Message.objects.filter(status=status, worker__startswith=worker_host_prefix())
        .order_by()  # Message's default order would defeat DISTINCT
        .values_list("worker", flat=True)
        .distinct()
    )
    return [worker for worker in found if worker and worker_gone(worker)]


def _left_by_previous_lives() -> list[tuple[int, str, str]]:
    """Streaming turns whose producer ran on this host in a process that is gone."""
    try:
        gone = _gone_here(Status.STREAMING)
        if not gone:
            return []
        rows = Message.objects.filter(status=Status.STREAMING, worker__in=gone)
        found = rows.values_list("pk", "conversation_id", "worker")[:SWEEP_BATCH]
        return [(pk, str(conversation), worker or "") for pk, conversation, worker in found]
    finally:
        release_connection()


def _abandon_unopened() -> int:
    """Deferred turns created by a process of this host that is gone, and not opened
    within a lease period: their 201 may never have reached anyone (the process died
    between the commit and the answer), so nobody would open them before the stale
    sweep. The model was never called: nothing was billed, no usage to estimate."""
    try:
        gone = _gone_here(Status.PENDING)
        if not gone:
            return 0
        now = timezone.now()
        cutoff = now - timedelta(seconds=settings.CHAT_LEASE_SECONDS)
        rows = Message.objects.filter(
            status=Status.PENDING, worker__in=gone, created_at__lt=cutoff
        ).values_list("pk", flat=True)[:SWEEP_BATCH]
        return sum(
            message_finalize(
                pk,
                unfinished=[Status.PENDING],
                status=Status.INCOMPLETE,
                finish_reason="interrupted",
                error_type="interrupted",
                error_message=NOT_STARTED,
                finished_at=now,
            )
            for pk in list(rows)
        )
    finally:
        release_connection()


async def turns_abandon_unopened() -> int:
    """`_abandon_unopened`, logged; returns how many. Never raises."""
    try:
        abandoned = await sync_to_async(_abandon_unopened)()
    except Exception:
        logger.exception("could not finish the unopened turns of a stopped process")
        return 0
    if abandoned:
        logger.warning(
            "finished %s unopened replies (the process that took them stopped)", abandoned
        )
    return abandoned


async def turns_recover_at_startup() -> None:
    """At start-up: this host's dead processes' turns at once, lapsed leases too. Never
    raises: a broken database must not stop the server's start."""
    try:
        await _recover_rows(await sync_to_async(_left_by_previous_lives)())
    except Exception:
        logger.exception("could not recover the turns of a previous process")
    await turns_recover_lapsed()


def lapsed_sweep_seconds() -> float:
    """How often a worker looks for lapsed leases: a turn is finished within about one
    and a half lease periods of its producer's last renewal."""
    return float(settings.CHAT_LEASE_SECONDS) / 2
