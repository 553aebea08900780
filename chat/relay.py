"""Relay an upstream event stream through a queue, so the consumer can stay responsive.

The upstream is read in its own task. The consumer gets its events, plus `PING` after
`ping_every` idle seconds, and stops with `StopRequested` when someone asks this turn to
stop: on this worker through the queue (instant), on another through a cache key (polled
once a second). Deltas already queued are merged, so a burst of tiny tokens costs one
frame; the first is never delayed. Leaving the relay, for any reason, cancels the
upstream task, which closes the upstream response.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from django.core.cache import cache

from chat.provider import TextDelta

PING = object()
CANCEL_POLL_SECONDS = 1.0
_DONE = object()
_STOP = object()
_queues: dict[str, asyncio.Queue[Any]] = {}


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


async def relay(
    upstream: AsyncIterator[Any], *, cancel_key: str, ping_every: float
) -> AsyncIterator[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    _queues[cancel_key] = queue

    async def pump() -> None:
        try:
            async for event in upstream:
                queue.put_nowait(event)
            queue.put_nowait(_DONE)
        except Exception as exc:  # handed to the consumer and raised there
            queue.put_nowait(_Failure(exc))

    task = asyncio.create_task(pump())
    last_event = last_poll = time.monotonic()
    wait = min(CANCEL_POLL_SECONDS, ping_every)
    try:
        while True:
            try:
                async with asyncio.timeout(wait):
                    item = await queue.get()
            except TimeoutError:
                item = None
            now = time.monotonic()
            if now - last_poll >= CANCEL_POLL_SECONDS:
                last_poll = now
                if await cache.aget(cancel_key):
                    raise StopRequested
            if item is None:
                if now - last_event >= ping_every:
                    last_event = now
                    yield PING
                continue
            last_event = now
            items = [item]
            if isinstance(item, TextDelta) and not queue.empty():
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
        _queues.pop(cancel_key, None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _merge_queued(first: TextDelta, queue: asyncio.Queue[Any]) -> list[Any]:
    """`first` joined with the deltas already waiting behind it (nothing waits for more)."""
    texts = [first.text]
    rest: list[Any] = []
    while not queue.empty():
        item = queue.get_nowait()
        if isinstance(item, TextDelta) and not rest:
            texts.append(item.text)
        else:
            rest.append(item)
    return [TextDelta("".join(texts)), *rest]
