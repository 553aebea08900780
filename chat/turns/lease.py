"""Leases: a worker producing a turn says, now and then, that it still does, so that when
it dies (`kill -9`, a lost machine) any other worker, or the same process restarted,
finishes the turn within seconds (`chat.turns.recover`).

The row names its producer (`worker`: host, process id and a random boot id) and holds a
first lease (`lease_until`), both written with the claim, so a short turn costs nothing
more. While it streams, one task per event loop renews every turn it holds at once,
every third of `CHAT_LEASE_SECONDS`: with `REDIS_URL` one key per worker in Redis (one
round trip, whatever the number of turns), else `lease_until` on the rows (one UPDATE),
and without Redis (or for a turn with no log in Redis) the text so far goes to the row
in the same transaction, so a crash loses at most an interval's worth of it. When Redis
cannot be reached the renewal falls back to the rows.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from chat.models import Message
from chat.runtime import PerLoop, spawn
from chat.text import storable
from chat.turns import log as turn_log
from chat.turns.finish import release_connection
from chat.turns.log import redis_streams
from chat.turns.workers import lease_until, worker_id

logger = logging.getLogger("chat")
Status = Message.Status


def renew_interval() -> float:
    return float(settings.CHAT_LEASE_SECONDS) / 3


@dataclass(slots=True)
class _Held:
    """A turn this loop produces: its text so far (the producer's own list, appended to
    as deltas arrive) and how much of it the row already has."""

    parts: list[str]
    log_key: str
    checkpointed: int = 0


@dataclass(slots=True)
class _Holdings:
    turns: dict[int, _Held] = field(default_factory=dict)
    keeper: asyncio.Task[None] | None = None


_holdings: PerLoop[_Holdings] = PerLoop(_Holdings)


def lease_hold(*, message_id: int, parts: list[str], log_key: str) -> None:
    """Renew the lease on this turn, and checkpoint `parts`, until `lease_release`."""
    holdings = _holdings.get()
    holdings.turns[message_id] = _Held(parts, log_key)
    if holdings.keeper is None or holdings.keeper.done():
        # A context of its own: it outlives the request that happened to start it.
        holdings.keeper = spawn(_keep(holdings), context=contextvars.Context())


def lease_release(message_id: int) -> None:
    holdings = _holdings.get_if_any()
    if holdings is not None:
        holdings.turns.pop(message_id, None)


def leases_held() -> set[int]:
    """The turns this loop produces (a sweep must not take them for dead)."""
    holdings = _holdings.get_if_any()
    return set(holdings.turns) if holdings is not None else set()


async def _keep(holdings: _Holdings) -> None:
    while holdings.turns:
        await asyncio.sleep(renew_interval())
        if not holdings.turns:
            return
        try:
            await leases_renew(holdings.turns)
        except Exception:  # the database is down: try again next time; turns go on
            logger.warning("could not renew turn leases", exc_info=True)


async def leases_renew(turns: dict[int, _Held]) -> None:
    """One renewal of every lease in `turns` and the checkpoints due."""
    shared = False
    if settings.REDIS_URL:
        try:
            await redis_streams.worker_lease_renew(worker_id(), settings.CHAT_LEASE_SECONDS)
            shared = True
        except Exception:
            logger.warning("Redis unreachable: turn leases renewed in the database")
    checkpoints = {}
    for message_id, held in list(turns.items()):
        in_redis = shared and turn_log.log_local(held.log_key) is not None
        if not in_redis and len(held.parts) > held.checkpointed:
            held.checkpointed = len(held.parts)
            checkpoints[message_id] = "".join(held.parts)
    renewed = [] if shared else [m for m in turns if m not in checkpoints]
    if renewed or checkpoints:
        await sync_to_async(_rows_renew)(renewed, checkpoints, lease_until())


def _rows_renew(renewed: list[int], checkpoints: dict[int, str], until: datetime) -> None:
    """One transaction: the leases on the rows, and the text of those that grew."""
    try:
        with transaction.atomic():
            streaming = Message.objects.filter(status=Status.STREAMING)
            if renewed:
                streaming.filter(pk__in=renewed).update(lease_until=until)
            for message_id, text in checkpoints.items():
                streaming.filter(pk=message_id).update(content=storable(text), lease_until=until)
    finally:
        release_connection()
