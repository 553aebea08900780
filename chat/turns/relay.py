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
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.core.cache import cache

from chat.llm import ReasoningDelta, TextDelta
from chat.runtime import PerLoop, Rearming, spawn
from chat.streams import IDLE, StreamEvent

Event = TypeVar("Event")
CANCEL_POLL_SECONDS = 1.0
# The idle timer may run this early (the event loop's clock resolution).
IDLE_TOLERANCE_SECONDS = 0.001
_DONE = object()
_STOP = object()
_inboxes: dict[str, _Inbox] = {}


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


def _is_delta(item: object) -> bool:
    return isinstance(item, TextDelta | ReasoningDelta)


class _Inbox:
    """A relay's queue. Its consumer is woken for each item, except deltas while it
    gathers them for a frame: those wait for the frame's deadline, so a frame of ten
    tokens wakes it once, not ten times."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque[Any] = deque()
        self.gathering = False
        self.loop = loop
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: object) -> None:
        self.items.append(item)
        waiter = self._waiter
        wakes = not (self.gathering and _is_delta(item))
        if wakes and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, until: float | None = None) -> None:
        """Until an item that wakes comes, or the event loop's time `until`."""
        self._waiter = waiter = self.loop.create_future()
        timer = None if until is None else self.loop.call_at(until, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def request_stop(cancel_key: str) -> None:
    """Stop a relay running in this process (other workers see the cache key)."""
    inbox = _inboxes.get(cancel_key)
    if inbox is not None:
        inbox.put(_STOP)


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
    loop = asyncio.get_running_loop()
    inbox = _inboxes[cancel_key] = _Inbox(loop)
    watched = _watch(cancel_key)
    taken_at = loop.time()  # when the consumer last took an event

    def idle_check() -> float:
        # One timer for the turn, re-armed from when the last event was taken, rather than
        # a timeout armed and cancelled around every event.
        due = taken_at + idle_after
        if loop.time() >= due - IDLE_TOLERANCE_SECONDS:
            if not inbox.items:
                inbox.put(IDLE)
            due = loop.time() + idle_after
        return due

    idle_timer = Rearming(loop, taken_at + idle_after, idle_check)

    async def pump() -> None:
        try:
            async for event in upstream:
                inbox.put(event)
            inbox.put(_DONE)
        except Exception as exc:  # handed to the consumer and raised there
            inbox.put(_Failure(exc))

    task = asyncio.create_task(pump())
    next_frame_at = -math.inf  # when deltas may next be handed on without gathering
    held: Any = None  # what ended the last gathering, handed on after its deltas
    gathering: list[TextDelta | ReasoningDelta] = []
    try:
        while True:
            if held is not None:
                item, held = held, None
            else:
                if not inbox.items:
                    await inbox.wait()
                item = inbox.items.popleft()
                taken_at = loop.time()
            if item is _DONE:
                return
            if item is _STOP:
                raise StopRequested
            if isinstance(item, _Failure):
                raise item.exc
            if not _is_delta(item):
                yield item
                continue
            deltas = [item]
            if loop.time() < next_frame_at:
                gathering = deltas
                held = await _gather(deltas, inbox, until=next_frame_at)
                gathering = []
            else:
                held = _take_queued(deltas, inbox)
            next_frame_at = loop.time() + frame_seconds
            for delta in _merged(deltas):
                yield cast(Event, delta)  # the upstream's own events, joined
    finally:
        if gathering and unsent is not None:  # the consumer was cancelled while we waited
            _take_queued(gathering, inbox)  # and those that had come for the same frame
            unsent.extend(_merged(gathering))
        idle_timer.cancel()
        _inboxes.pop(cancel_key, None)
        watched.discard(cancel_key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _gather(deltas: list[Any], inbox: _Inbox, *, until: float) -> Any:
    """Add to `deltas` those that come before `until` (the event loop's time); return the
    first other item, as soon as it comes (None if none did)."""
    inbox.gathering = True
    try:
        held = _take_queued(deltas, inbox)
        if held is None and inbox.loop.time() < until:
            await inbox.wait(until)  # for something else than a delta, or the deadline
            held = _take_queued(deltas, inbox)
        return held
    finally:
        inbox.gathering = False


def _take_queued(deltas: list[Any], inbox: _Inbox) -> Any:
    """Add to `deltas` those already queued; return the first other item (None if none),
    leaving what follows it queued."""
    items = inbox.items
    while items:
        if not _is_delta(items[0]):
            return items.popleft()
        deltas.append(items.popleft())
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
