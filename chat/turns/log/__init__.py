"""A detached turn's event log: its SSE frames, numbered from 1 (the SSE `id:`), so any
reader (a reload, a second tab, a script resuming) gets exactly the frames after the last
one it has, as the same bytes the first reader got.

In this process always (`memory`). With `REDIS_URL`, the producer also appends each frame
to a Redis Stream, so a reader on another worker can follow it (`redis_streams`). A log is
dropped `CHAT_RESUME_TTL_SECONDS` after its turn ends and never holds more than its turn's
frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from django.conf import settings

from chat.streams import IDLE, StreamEvent, encode_sse
from chat.turns.log import memory, redis_streams
from chat.turns.log.redis_streams import alive_forget, alive_refresh, watched_elsewhere

__all__ = [
    "FINAL_TYPES",
    "TurnLog",
    "alive_forget",
    "alive_refresh",
    "log_forget_later",
    "log_key",
    "log_local",
    "log_open",
    "log_remote",
    "log_text",
    "watched_elsewhere",
]

FINAL_TYPES = ("end", "error")


class TurnLog:
    """The frames of one turn, in order, and the readers waiting for more. `publisher`
    gets each frame as it is added (to mirror the log elsewhere)."""

    def __init__(self, key: str, *, publisher: redis_streams.Publisher | None = None) -> None:
        self.key = key
        self.frames: list[bytes] = []
        self.events: list[StreamEvent] = []
        self.closed = False
        self.readers = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._publisher = publisher
        self._reader_left: Callable[[], None] | None = None

    def on_reader_left(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time a reader stops reading (its producer may then stop)."""
        self._reader_left = callback

    def append(self, event: StreamEvent) -> None:
        if self.closed:
            return
        self.add_frame(encode_sse(event, id=len(self.frames) + 1), event)

    def add_frame(self, frame: bytes, event: StreamEvent) -> None:
        self.frames.append(frame)
        self.events.append(event)
        if event.type in FINAL_TYPES:
            self.closed = True
            # No producer to tell any more; and the callback refers to the producer, which
            # refers to this log: kept, the finished log with every frame would wait for a
            # full collection after its readers' time is up, not go when it is let go.
            self._reader_left = None
        if self._publisher is not None:
            self._publisher.push(len(self.frames), frame, final=self.closed)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _changed(self, timeout: float) -> bool:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return False
        return True

    async def frames_after(self, after: int) -> AsyncGenerator[bytes | StreamEvent, None]:
        """The frames after position `after`, as stored, then each new one, until the final
        one; `IDLE` whenever none has come for a while. Frames already there go as one
        chunk."""
        async for span in self._spans(after):
            yield IDLE if span is None else b"".join(self.frames[span[0] : span[1]])

    async def events_after(self, after: int) -> AsyncGenerator[StreamEvent, None]:
        """`frames_after`, as the events they encode."""
        async for span in self._spans(after):
            if span is None:
                yield IDLE
            else:
                for event in self.events[span[0] : span[1]]:
                    yield event

    async def _spans(self, after: int) -> AsyncIterator[tuple[int, int] | None]:
        """The positions the log grows by past `after`, each time it does; None when it
        has not for `CHAT_SSE_PING_SECONDS`."""
        self.readers += 1
        try:
            while True:
                if after < len(self.frames):
                    yield after, len(self.frames)
                    after = len(self.frames)
                if self.closed:
                    if after > len(self.frames) > 0:
                        # The reader got further than this log reaches: a copy that lost
                        # frames (Redis restarted empty mid-reply). It still gets the end.
                        yield len(self.frames) - 1, len(self.frames)
                    return
                if not await self._changed(settings.CHAT_SSE_PING_SECONDS):
                    yield None
        finally:
            self.readers -= 1
            if self._reader_left is not None:
                self._reader_left()


def log_key(conversation_id: Any, message_id: int) -> str:
    return f"chat:turn:{conversation_id}:{message_id}"


def log_open(key: str) -> TurnLog:
    """A new log for a turn this process produces (mirrored to Redis when configured)."""
    publisher = redis_streams.Publisher(key) if settings.REDIS_URL else None
    return memory.produced.add(TurnLog(key, publisher=publisher))


def log_forget_later(log: TurnLog) -> None:
    """Keep a finished turn's log for resuming readers, then let it go."""
    memory.forget_later(log)


def log_local(key: str) -> TurnLog | None:
    """The log of a turn this process produces (or produced, until it is forgotten)."""
    return memory.produced.get(key)


async def log_remote(
    key: str, *, interrupted: Callable[[TurnLog], Awaitable[None]]
) -> TurnLog | None:
    """A local copy of a log another worker produces (or produced), or None if Redis has
    no trace of it. `interrupted(log)` is awaited once if its producer stops answering."""
    if not settings.REDIS_URL:
        return None
    copy = memory.copies.get(key)
    if copy is None and await redis_streams.log_exists(key):
        copy = redis_streams.tail_start(TurnLog(key), interrupted=interrupted)
    return copy


def log_text(log: TurnLog) -> str:
    return "".join(event.data.get("text", "") for event in log.events if event.type == "delta")
