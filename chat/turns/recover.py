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
from chat.turns.workers import worker_gone

logger = logging.getLogger("chat")
Status = Message.Status
# Turns recovered per sweep (the next sweep takes the rest).
SWEEP_BATCH = 100


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


def _lapsed() -> list[tuple[int, str, str]]:
    """Streaming turns whose lease on the row lapsed: (id, conversation id, worker)."""
    try:
        rows = Message.objects.filter(
            status=Status.STREAMING, lease_until__lt=timezone.now()
        ).values_list("pk", "conversation_id", "worker")[:SWEEP_BATCH]
        return [(pk, str(conversation), worker or "") for pk, conversation, worker in rows]
    finally:
        release_connection()


async def turns_recover_lapsed() -> int:
    """Finish the turns whose producer stopped renewing its lease (with Redis: whose
    worker's lease in Redis lapsed); returns how many. Never raises."""
    try:
        mine = leases_held()
        lapsed = [row for row in await sync_to_async(_lapsed)() if row[0] not in mine]
        if lapsed and settings.REDIS_URL:
            try:
                alive = await redis_streams.workers_alive(sorted({w for _, _, w in lapsed}))
            except Exception:
                # Which workers live is not known: leave their turns to the next sweep.
                logger.warning("Redis unreachable: lapsed turn leases left for later")
                return 0
            lapsed = [row for row in lapsed if row[2] not in alive]
        return await _recover_rows(lapsed)
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


def _left_by_previous_lives() -> list[tuple[int, str, str]]:
    """Streaming turns whose producer ran on this host in a process that is gone."""
    try:
        rows = Message.objects.filter(status=Status.STREAMING, worker__isnull=False)
        found = rows.values_list("pk", "conversation_id", "worker")[:SWEEP_BATCH]
        return [(pk, str(conv), w) for pk, conv, worker in found if worker_gone(w := worker or "")]
    finally:
        release_connection()


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
