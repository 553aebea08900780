"""Relay an upstream event stream through a queue, so the consumer can stay responsive.

The upstream is read in its own task. The consumer gets its events, plus `IDLE` after
`idle_after` seconds with none (one timer per turn, not one per event), and stops with
`StopRequested` when someone asks this turn to stop: on this worker through the queue
(instant), on another through a cache key (polled by one task per event loop for all its
relays, so however many streams are open, each poll is one cache round trip). Deltas
already queued are merged, so a burst of tiny tokens costs one frame; the first is never
delayed. Leaving the relay, for any reason, cancels the upstream task, which closes the
upstream response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
    upstream: AsyncIterator[Event], *, cancel_key: str, idle_after: float
) -> AsyncGenerator[Event | StreamEvent, None]:
    """`upstream`'s events (the model's, and the tools' in between), and `IDLE` (the one
    `StreamEvent` here) after `idle_after` seconds without any."""
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
    try:
        while True:
            item = queue.get_nowait() if not queue.empty() else await queue.get()
            taken_at = loop.time()
            items = [item]
            if isinstance(item, TextDelta | ReasoningDelta) and not queue.empty():
                items = _merge_queued(item, queue)
            for one in items:
                if one is _DONE:
                    return
                if one is _STOP:
                    raise StopRequested
                if isinstance(one, _Failure):
                    raise one.exc
                yield one
    finally:
        if idle_timer is not None:
            idle_timer.cancel()
        _queues.pop(cancel_key, None)
        watched.discard(cancel_key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _merge_queued(first: TextDelta | ReasoningDelta, queue: asyncio.Queue[Any]) -> list[Any]:
    """`first` joined with the deltas of its kind already waiting behind it (nothing waits
    for more)."""
    kind = type(first)
    texts = [first.text]
    rest: list[Any] = []
    while not queue.empty():
        item = queue.get_nowait()
        if type(item) is kind and not rest:
            texts.append(item.text)
        else:
            rest.append(item)
    return [kind("".join(texts)), *rest]
