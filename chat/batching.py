"""Group commit: concurrent calls that each need one short write become one transaction.

Every ORM call of a worker runs on its one database thread (see chatsite/asgi.py), and
under load that thread waits for the GIL after every SQL statement while the event loop
runs: a thousand turns opened at once each paid that wait four or five times, one after
the other. A `Batcher` hands the database thread everything that queued up while its
previous batch was being written, as one list: one transaction, a few statements, one
thread hop, whatever the number of callers. A lone caller is written at once (nothing
waits to fill a batch), so this adds no latency when the server is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async

T = TypeVar("T")
R = TypeVar("R")

# Bounds one transaction's size (and how long it holds SQLite's single write lock).
MAX_BATCH = 200


@dataclass
class _Queue(Generic[T, R]):
    items: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class Batcher(Generic[T, R]):
    """`await batcher.submit(item)` → `write([...items])[i]` for that item.

    `write` runs on the database thread and returns one result per item, in order: a
    value, or the exception that item's caller gets (so one bad item fails only its own
    caller). An exception raised by `write` itself fails every caller of that batch.
    """

    def __init__(self, write: Callable[[list[T]], list[R | Exception]]) -> None:
        self._write = write
        # Per event loop: futures and tasks cannot cross loops (tests run several).
        self._queues: dict[asyncio.AbstractEventLoop, _Queue[T, R]] = {}

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the returned future resolves once its batch is committed.
        Cancelling the future does not take the item out of a batch already written."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        future: asyncio.Future[R] = loop.create_future()
        queue.items.append((item, future))
        if queue.writer is None:
            queue.writer = loop.create_task(self._drain(queue))
        return future

    async def _drain(self, queue: _Queue[T, R]) -> None:
        try:
            while queue.items:
                batch, queue.items = queue.items[:MAX_BATCH], queue.items[MAX_BATCH:]
                write = asyncio.ensure_future(
                    sync_to_async(self._write)([item for item, _ in batch])
                )
                try:
                    await asyncio.wait([write])
                except asyncio.CancelledError:
                    # The write commits whatever happens to this task: wait and report it.
                    await asyncio.wait([write])
                    raise
                finally:
                    _settle(batch, write)
        finally:
            queue.writer = None
            for _, future in queue.items:  # only after a cancellation (the loop is closing)
                future.cancel()
            queue.items.clear()


def _settle(
    batch: list[tuple[T, asyncio.Future[R]]], write: asyncio.Future[list[R | Exception]]
) -> None:
    """Give each caller its own result, or the whole write's failure."""
    for index, (_, future) in enumerate(batch):
        if future.done():
            continue
        if not write.done() or write.cancelled():
            future.cancel()
        elif write.exception() is not None:
            future.set_exception(write.exception())
        else:
            result = write.result()[index]
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
