"""Relay an upstream event stream through a queue, so the consumer can stay responsive.

The upstream is read in its own task. The consumer gets its events, plus `IDLE` after
`idle_after` seconds with none (one timer per turn, not one per event), and stops with
`StopRequested` when someone asks this turn to stop: on this worker through the queue
(instant), on another through a cache key (polled by one task per event loop for all its
relays, so however many streams are open, each poll is one cache round trip).

Text and reasoning deltas are paced: after one is handed on, those that come within the
next `frame_seconds` are gathered and handed on as one, so a model sending a token every
few milliseconds costs a frame per interval, not one per token (each frame is a socket
write for every reader, and a log entry). The first delta, and the first after a quiet
spell, go at once; anything else (a tool call, the end, a failure, a stop request, the
idle ping) hands on what was gathered at once and then itself, in order. Leaving the
relay, for any reason, cancels the upstream task, which closes the upstream response.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.core.cache import cache

from chat.llm import ReasoningDelta, TextDelta
from chat.runtime import PerLoop, spawn
from chat.streams import IDLE, StreamEvent

Event = TypeVar("Event")
CANCEL_POLL_SECONDS = 1.0
# The idle timer may run this early (the event loop's clock resolution).
IDLE_TOLERANCE_SECONDS = 0.001
_DONE = object()
_STOP = object()
_queues: dict[str, asyncio.Queue[Any]] = {}


@dataclass(slots=True)
class _Watched:
    """An event loop's open relays: their cancel keys, and the task polling them."""

    keys: set[str] = field(default_factory=set)
    poller: asyncio.Task[None] | None = None


_watched: PerLoop[_Watched] = PerLoop(_Watched)


class StopRequested(Exception):
    """Someone asked for this turn to stop."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def request_stop(cancel_key: str) -> None:
    """Stop a relay running in this process (other workers see the cache key)."""
    queue = _queues.get(cancel_key)
    if queue is not None:
        queue.put_nowait(_STOP)


def _watch(cancel_key: str) -> set[str]:
    watched = _watched.get()
    watched.keys.add(cancel_key)
    if watched.poller is None or watched.poller.done():
        watched.poller = spawn(_poll_stops(watched.keys))
    return watched.keys


async def _poll_stops(keys: set[str]) -> None:
    """Stops asked on other workers: one `get_many` a poll for every open relay here."""
    while keys:
        await asyncio.sleep(CANCEL_POLL_SECONDS)
        if not keys:
            return
        try:
            asked = await sync_to_async(cache.get_many, thread_sensitive=False)(list(keys))
        except Exception:  # a cache outage must not end the streams; try again next time
            continue
        for key, value in asked.items():
            if value:
                request_stop(key)


async def relay(
    upstream: AsyncIterator[Event],
    *,
    cancel_key: str,
    idle_after: float,
    frame_seconds: float = 0.0,
    unsent: list[TextDelta | ReasoningDelta] | None = None,
) -> AsyncGenerator[Event | StreamEvent, None]:
    """`upstream`'s events (the model's, and the tools' in between), and `IDLE` (the one
    `StreamEvent` here) after `idle_after` seconds without any; deltas at most one run
    every `frame_seconds` (0: as they come, those already queued merged). If the consumer
    is cancelled while deltas are gathered, they are left in `unsent`."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    _queues[cancel_key] = queue
    watched = _watch(cancel_key)
    loop = asyncio.get_running_loop()
    taken_at = loop.time()  # when the consumer last took an event
    idle_timer: asyncio.TimerHandle | None = None

    def idle_check() -> None:
        # One timer for the turn, re-armed from when the last event was taken, rather than
        # a timeout armed and cancelled around every event.
        nonlocal idle_timer
        due = taken_at + idle_after
        if loop.time() >= due - IDLE_TOLERANCE_SECONDS:
            if queue.empty():
                queue.put_nowait(IDLE)
            due = loop.time() + idle_after
        idle_timer = loop.call_at(due, idle_check)

    idle_timer = loop.call_at(taken_at + idle_after, idle_check)

    async def pump() -> None:
        try:
            async for event in upstream:
                queue.put_nowait(event)
            queue.put_nowait(_DONE)
        except Exception as exc:  # handed to the consumer and raised there
            queue.put_nowait(_Failure(exc))

    task = asyncio.create_task(pump())
    next_frame_at = -math.inf  # when deltas may next be handed on without gathering
    held: Any = None  # what ended the last gathering, handed on after its deltas
    gathering: list[TextDelta | ReasoningDelta] = []
    try:
        while True:
            if held is not None:
                item, held = held, None
            else:
                item = queue.get_nowait() if not queue.empty() else await queue.get()
                taken_at = loop.time()
            if item is _DONE:
                return
            if item is _STOP:
                raise StopRequested
            if isinstance(item, _Failure):
                raise item.exc
            if not isinstance(item, TextDelta | ReasoningDelta):
                yield item
                continue
            deltas = [item]
            if loop.time() < next_frame_at:
                gathering = deltas
                held = await _gather(deltas, queue, until=next_frame_at)
                gathering = []
            else:
                held = _take_queued(deltas, queue)
            next_frame_at = loop.time() + frame_seconds
            for delta in _merged(deltas):
                yield cast(Event, delta)  # the upstream's own events, joined
    finally:
        if gathering and unsent is not None:  # the consumer was cancelled while we waited
            _take_queued(gathering, queue)  # and those that had come for the same frame
            unsent.extend(_merged(gathering))
        if idle_timer is not None:
            idle_timer.cancel()
        _queues.pop(cancel_key, None)
        watched.discard(cancel_key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _gather(
    deltas: list[TextDelta | ReasoningDelta], queue: asyncio.Queue[Any], *, until: float
) -> Any:
    """Add to `deltas` those that come before `until` (the event loop's time); return the
    first other item, as soon as it comes (None if none did)."""
    with contextlib.suppress(TimeoutError):
        # One timer for the whole gathering; `Queue.get` leaves the item queued when its
        # wait is cancelled, so none is lost at the deadline.
        async with asyncio.timeout_at(until):
            while True:
                item = await queue.get()
                if not isinstance(item, TextDelta | ReasoningDelta):
                    return item
                deltas.append(item)
    return _take_queued(deltas, queue)


def _take_queued(deltas: list[TextDelta | ReasoningDelta], queue: asyncio.Queue[Any]) -> Any:
    """Add to `deltas` those already queued; return the first other item (None if none),
    leaving what follows it queued."""
    while not queue.empty():
        item = queue.get_nowait()
        if not isinstance(item, TextDelta | ReasoningDelta):
            return item
        deltas.append(item)
    return None


def _merged(deltas: list[TextDelta | ReasoningDelta]) -> list[TextDelta | ReasoningDelta]:
    """Each run of deltas of one kind (text, reasoning) joined into one, in order."""
    if len(deltas) == 1:
        return deltas
    runs: list[tuple[type[TextDelta | ReasoningDelta], list[str]]] = []
    for delta in deltas:
        if runs and runs[-1][0] is type(delta):
            runs[-1][1].append(delta.text)
        else:
            runs.append((type(delta), [delta.text]))
    return [kind("".join(texts)) for kind, texts in runs]
