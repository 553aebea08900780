"""Group commit: concurrent calls that each need one short write become one transaction.

Every ORM call of a worker runs on its one database thread (`chat.seams.on_chat_thread`), and
under load that thread waits for the GIL after every SQL statement while the event loop
runs: turns opened at once each paid that wait for every statement, one after the
other. A `Batcher` hands the database thread everything that queued up while its
previous batch was being written, as one list: one transaction, a few statements, one
thread hop, whatever the number of callers. A lone caller is written at once (nothing
waits to fill a batch), so this adds no latency when the server is idle.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async

from chat.runtime import PerLoop, spawn

T = TypeVar("T")
R = TypeVar("R")

# Bounds one transaction's size (and how long it holds SQLite's single write lock).
MAX_BATCH = 200
# The longest a batch waits for the batcher it yields to: long enough for a few of that
# batcher's batches, short enough that what this batch holds back is not held for long.
YIELD_AT_MOST_SECONDS = 0.5


@dataclass
class _Queue(Generic[T, R]):
    items: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class Batcher(Generic[T, R]):
    """`await batcher.submit(item)` → `write([...items])[i]` for that item.

    `write` runs on the database thread, in one transaction, and returns one result per
    item, in order: a value, or the exception that item's caller gets (so a refused item
    fails only its own caller). If `write` itself raises (a deadlock, a constraint, a
    lost connection), the batch is rolled back and its items are written again one at a
    time, so only the items that fail on their own fail.
    """

    def __init__(
        self,
        write: Callable[[list[T]], list[R | Exception]],
        *,
        yields_to: Batcher[Any, Any] | None = None,
    ) -> None:
        self._write = write
        self._yields_to = yields_to
        _batchers.add(self)
        self._queues: PerLoop[_Queue[T, R]] = PerLoop(_Queue)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the returned future resolves once its batch is committed.
        Cancelling the future does not take the item out of a batch already written."""
        queue = self._queues.get()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue.items.append((item, future))
        if queue.writer is None or queue.writer.done():
            # A context of its own: the writer outlives the request that happened to
            # start it, and must not run on that request's thread (asgiref picks the
            # thread from the context under Django's per-request ThreadSensitiveContext).
            queue.writer = spawn(self._drain(queue), context=contextvars.Context())
            queue.writer.add_done_callback(functools.partial(_writer_done, queue))
        return future

    def writing(self) -> asyncio.Task[None] | None:
        """The task writing what was queued on the running loop, while there is one."""
        queue = self._queues.get_if_any()
        return queue.writer if queue is not None else None

    def _write_all(self, items: list[T]) -> list[R | Exception]:
        try:
            return self._write(items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        results: list[R | Exception] = []
        for item in items:
            try:
                results += self._write([item])
            except Exception as exc:
                results.append(exc)
        return results

    async def _drain(self, queue: _Queue[T, R]) -> None:
        while queue.items:
            if self._yields_to is not None and (ahead := self._yields_to.writing()):
                # Both share the one database thread, which takes batches in the order
                # they are handed to it. Bounded, so a steady stream of the others cannot
                # hold this batch back for good.
                await asyncio.wait([ahead], timeout=YIELD_AT_MOST_SECONDS)
            batch, queue.items = queue.items[:MAX_BATCH], queue.items[MAX_BATCH:]
            write = asyncio.ensure_future(
                sync_to_async(self._write_all)([item for item, _ in batch])
            )
            try:
                await asyncio.wait([write])
            except asyncio.CancelledError:
                # Cancelled with the write under way: report its outcome if it can still be
                # awaited. When the loop is closing, `write` is cancelled too and its thread
                # commits unobserved; its callers are cancelled (the stale sweep records a
                # turn left behind). `settled()` at shutdown keeps that from happening.
                await asyncio.wait([write])
                raise
            finally:
                _settle(batch, write)


_batchers: weakref.WeakSet[Batcher[Any, Any]] = weakref.WeakSet()


async def settled(*, timeout: float) -> bool:
    """Wait (up to `timeout` s) until everything queued on this loop is written; for
    server shutdown, before the loop closes and cancels writers mid-batch."""
    writers = [writer for batcher in list(_batchers) if (writer := batcher.writing()) is not None]
    if not writers:
        return True
    _, pending = await asyncio.wait(writers, timeout=timeout)
    return not pending


def _writer_done(queue: _Queue[T, R], writer: asyncio.Task[None]) -> None:
    if queue.writer is not writer:
        return  # a newer writer has taken over the queue
    queue.writer = None
    if writer.cancelled():  # the loop is closing (even before the writer ever ran)
        for _, future in queue.items:
            future.cancel()
        queue.items.clear()


def _settle(
    batch: list[tuple[T, asyncio.Future[R]]], write: asyncio.Future[list[R | Exception]]
) -> None:
    """Give each caller its own result; if the write itself did not finish, cancel them."""
    done = write.done() and not write.cancelled() and write.exception() is None
    results: list[R | Exception] = write.result() if done else []
    for index, (_, future) in enumerate(batch):
        if future.done():
            continue
        if index >= len(results):
            future.cancel()
            continue
        result = results[index]
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
