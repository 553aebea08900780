"""Detached turns: the model call runs in a task of its own, not in the request that
claimed it, and writes its events to the turn's log (`chat.turns.log`); readers come and
go. It ends when the model does, on Stop (`turn_cancel`, any worker), or when nobody has
read it for `CHAT_RESUME_GRACE_SECONDS`. The stream slot, quota and budget are settled
once, when the producer ends (`limits.guarded`), never when a reader leaves.

One task per event loop ticks (`TICK_SECONDS`) for all the turns it produces: it refreshes
their liveness in Redis (so readers elsewhere notice a dead worker) and stops the ones
nobody watches, in one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from django.conf import settings

from chat.models import Message
from chat.runtime import PerLoop, spawn
from chat.spend import limits
from chat.streams import StreamEvent, error_event
from chat.turns import log as turn_log
from chat.turns import relay
from chat.turns.control import cancel_key
from chat.turns.finish import FINISH_RETRY_DELAYS
from chat.turns.log import TurnLog, log_key
from chat.turns.recover import turn_recover
from chat.turns.selectors import stream_url
from chat.turns.start import Turn
from chat.turns.stream import turn_stream

logger = logging.getLogger("chat")
TICK_SECONDS = 1.0
# How long a reader waits for the log of a turn just claimed on another worker to appear.
LOG_APPEARS_SECONDS = 2.0
# The reader whose request claimed a turn starts reading only once its response is under
# way; until then (or this long) the turn is not unwatched, even with no grace period.
FIRST_READER_SECONDS = 5.0
Status = Message.Status


@dataclass(slots=True)
class _Producer:
    log: TurnLog
    stop_key: str
    unwatched_since: float | None = None
    watched_elsewhere: bool = False  # by a reader on another worker, at the last tick


@dataclass(slots=True)
class _Produced:
    """An event loop's producers, by log key, and the task that ticks for them."""

    producers: dict[str, _Producer] = field(default_factory=dict)
    ticker: asyncio.Task[None] | None = None


_produced: PerLoop[_Produced] = PerLoop(_Produced)


async def turn_detach(
    *, turn: Turn, key: str, slot: bool, user_id: int | None, resumable_url: bool = False
) -> TurnLog:
    """Start producing `turn` in its own task; returns its log, its `start` already in.
    `resumable_url`: the `start` event names the `stream_url` (a direct POST asked to be
    resumable; a deferred turn's client has it already)."""
    events = limits.guarded(
        turn_stream(turn=turn), key=key, message_id=turn.message_id, slot=slot, user_id=user_id
    )
    log = turn_log.log_open(log_key(turn.conversation_id, turn.message_id))
    # Taken here, so the turn is inside its `try` (its row will be finished) before the
    # response leaves, and the first reader finds `start` in the log.
    first = await anext(events)
    if resumable_url and first.type == "start":
        first = StreamEvent("start", {**first.data, "stream_url": stream_url(turn.message_id)})
    log.append(first)
    stop_key = cancel_key(turn.conversation_id, turn.message_id)
    producer = _produced.get().producers[log.key] = _Producer(
        log, stop_key, unwatched_since=time.monotonic() + FIRST_READER_SECONDS
    )
    log.on_reader_left(lambda: _reader_left(producer))
    # A context of its own: the task outlives the request, and must not be bound to its
    # thread (asgiref picks the database thread from the context).
    spawn(_produce(events, producer), context=contextvars.Context())
    _tick_soon()
    with contextlib.suppress(Exception):  # Redis out: the ticker tries again
        await turn_log.alive_refresh([log.key])
    return log


async def _produce(events: AsyncGenerator[StreamEvent, None], producer: _Producer) -> None:
    log = producer.log
    final: StreamEvent | None = None
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if event.type in turn_log.FINAL_TYPES:
                    # Held back until the slot and counters are settled (the generator's
                    # end): a reader that gets it may start its next turn at once.
                    final = event
                elif event.type != "idle":  # each reader says when it is idle itself
                    log.append(event)
    except Exception:  # the row is finished by turn_stream; readers must not hang
        logger.exception("detached turn %s failed", log.key)
    finally:
        log.append(final or _interrupted_event())
        _produced.get().producers.pop(log.key, None)
        turn_log.log_forget_later(log)
        with contextlib.suppress(Exception):
            await turn_log.alive_forget(log.key)


def _reader_left(producer: _Producer) -> None:
    """Grace 0: the turn stops with its last reader, unless the last tick saw one reading
    it on another worker (then the ticker stops it once that one is gone too)."""
    log = producer.log
    if log.readers or log.closed or settings.CHAT_RESUME_GRACE_SECONDS > 0:
        return
    if not producer.watched_elsewhere:
        relay.request_stop(producer.stop_key)


def _tick_soon() -> None:
    produced = _produced.get()
    if produced.ticker is None or produced.ticker.done():
        produced.ticker = spawn(_tick_forever(produced.producers), context=contextvars.Context())


async def _tick_forever(producers: dict[str, _Producer]) -> None:
    while producers:
        try:
            await _tick(producers)
        except Exception:  # Redis out: try again next time; the producers go on
            logger.warning("turn ticker failed", exc_info=True)
        await asyncio.sleep(TICK_SECONDS)


async def _tick(producers: dict[str, _Producer]) -> None:
    keys = list(producers)
    await turn_log.alive_refresh(keys)
    elsewhere = await turn_log.watched_elsewhere(keys)
    now = time.monotonic()
    for key in keys:
        producer = producers.get(key)
        if producer is None:
            continue
        producer.watched_elsewhere = key in elsewhere
        if producer.log.readers or producer.watched_elsewhere:
            producer.unwatched_since = None
            continue
        if producer.unwatched_since is None:
            producer.unwatched_since = now
        if now - producer.unwatched_since >= settings.CHAT_RESUME_GRACE_SECONDS:
            relay.request_stop(producer.stop_key)


def _interrupted_event() -> StreamEvent:
    return error_event(
        status=str(Status.INCOMPLETE),
        error_type="interrupted",
        message="The server writing this reply stopped; what arrived is kept.",
    )


async def _interrupted(log: TurnLog) -> None:
    """The worker producing `log` stopped answering: the row is finished as far as it got
    (`incomplete`, usage estimated, counted once whoever gets there first), and readers
    get a final `error` with what was recorded."""
    message_id = int(log.key.rsplit(":", 1)[1])
    data = None
    # The database restarting: tried again as a final write is (readers wait, pinged),
    # since the producer may well have finished the turn; then readers still get an end.
    for delay in (0.0, *FINISH_RETRY_DELAYS):
        await asyncio.sleep(delay)
        try:
            data = await turn_recover(message_id=message_id, text=turn_log.log_text(log))
            break
        except Exception:
            logger.warning("could not read turn %s to end its readers; retrying", message_id)
    if data is None:
        log.append(_interrupted_event())
    else:  # what was recorded (the producer may have finished it after all)
        log.append(StreamEvent("error" if "error" in data else "end", data))


async def turn_log_find(*, message: Message) -> TurnLog | None:
    """The log a reader of `message` follows: this process's, or another worker's through
    Redis; None when there is none (finished long ago, or streamed by a direct request)."""
    key = log_key(message.conversation_id, message.pk)
    # A turn claimed a moment ago (here or elsewhere) may not have opened its log yet.
    deadline = time.monotonic() + LOG_APPEARS_SECONDS
    while True:
        found = turn_log.log_local(key)
        if found is None and settings.REDIS_URL:
            try:
                found = await turn_log.log_remote(key, interrupted=_interrupted)
            except Exception:  # Redis down: the reader follows the row instead
                logger.warning("turn log %s unreachable in Redis", key, exc_info=True)
                return None
        if found is not None or message.status != Status.STREAMING:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.05)
