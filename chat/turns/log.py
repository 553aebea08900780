"""A detached turn's event log: its SSE frames, numbered from 1 (the SSE `id:`), so any
reader (a reload, a second tab, a script resuming) gets exactly the frames after the last
one it has, as the same bytes the first reader got.

In this process always. With `REDIS_URL`, the producer also appends each frame to a Redis
Stream (entry id `0-<position>`), so a reader on another worker can follow it: one task
per turn and worker tails the stream into a local copy that all its readers share. The
frames queued while a write is under way go in one pipelined round trip, so a burst of
frames costs one write, never one per token. A log is dropped `CHAT_RESUME_TTL_SECONDS`
after its turn ends and never holds more than its turn's frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from chat.runtime import PerLoop, spawn
from chat.streams import SSE_PING, StreamEvent, encode_sse

logger = logging.getLogger("chat")
FINAL_TYPES = ("end", "error")
# A producer refreshes its liveness key every second; readers elsewhere give it up after
# the key has been missing on this many checks a second apart.
ALIVE_SECONDS = 5
MISSES_BEFORE_INTERRUPTED = 3
POLL_MS = 1000


class TurnLog:
    """The frames of one turn, in order, and the readers waiting for more."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.frames: list[bytes] = []
        self.events: list[StreamEvent] = []
        self.closed = False
        self.readers = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._publisher: _Publisher | None = None

    def append(self, event: StreamEvent) -> None:
        if self.closed:
            return
        self.add_frame(encode_sse(event, id=len(self.frames) + 1), event)

    def add_frame(self, frame: bytes, event: StreamEvent) -> None:
        self.frames.append(frame)
        self.events.append(event)
        if event.type in FINAL_TYPES:
            self.closed = True
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

    async def frames_after(self, after: int, *, ping_every: float) -> AsyncIterator[bytes]:
        """The frames after position `after`, then each new one, until the final one;
        `: ping` after `ping_every` idle seconds. Frames already there go as one chunk."""
        async for position in self._positions(after, ping_every=ping_every):
            if position < 0:
                yield SSE_PING
            else:
                yield b"".join(self.frames[after:position])
                after = position

    async def events_after(self, after: int) -> AsyncIterator[StreamEvent]:
        async for position in self._positions(after, ping_every=settings.CHAT_SSE_PING_SECONDS):
            if position < 0:
                yield StreamEvent("ping")
            else:
                for event in self.events[after:position]:
                    yield event
                after = position

    async def _positions(self, after: int, *, ping_every: float) -> AsyncIterator[int]:
        self.readers += 1
        try:
            while True:
                if after < len(self.frames):
                    after = len(self.frames)
                    yield after
                if self.closed:
                    return
                if not await self._changed(ping_every):
                    yield -1
        finally:
            self.readers -= 1
            readers_changed(self)


def readers_changed(log: TurnLog) -> None:
    """Tell the producer (`chat.turns.detached`) that a reader left."""
    hook = reader_hooks.get(log.key)
    if hook is not None:
        hook()


reader_hooks: dict[str, Any] = {}
_local: dict[str, TurnLog] = {}  # logs produced in this process
_tails: dict[str, TurnLog] = {}  # local copies of logs produced by other workers


def log_key(conversation_id: Any, message_id: int) -> str:
    return f"chat:turn:{conversation_id}:{message_id}"


def log_open(key: str) -> TurnLog:
    """A new log for a turn this process produces (mirrored to Redis when configured)."""
    log = TurnLog(key)
    if settings.REDIS_URL:
        log._publisher = _Publisher(key)
    _local[key] = log
    return log


def log_forget_later(log: TurnLog) -> None:
    """Keep a finished turn's log for resuming readers, then let it go."""
    loop = asyncio.get_running_loop()
    loop.call_later(settings.CHAT_RESUME_TTL_SECONDS, _forget, log)


def _forget(log: TurnLog) -> None:
    if _local.get(log.key) is log:
        del _local[log.key]


def log_local(key: str) -> TurnLog | None:
    return _local.get(key)


# ---- Redis


def _redis_connect() -> Any:
    import redis.asyncio

    return redis.asyncio.Redis.from_url(settings.REDIS_URL)


# One `redis.asyncio` client per event loop (its connections belong to that loop).
_clients: PerLoop[Any] = PerLoop(_redis_connect)


def redis_client() -> Any:
    return _clients.get()


def _redis_key(key: str, kind: str = "log") -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "") or "chatsite"
    return f"{prefix}:{key}:{kind}"


class _Publisher:
    """Appends frames to the Redis Stream, all that queued up in one pipeline."""

    def __init__(self, key: str) -> None:
        self.key = _redis_key(key)
        self.pending: list[tuple[int, bytes, bool]] = []
        self.task: asyncio.Task[None] | None = None

    def push(self, position: int, frame: bytes, *, final: bool) -> None:
        self.pending.append((position, frame, final))
        if self.task is None or self.task.done():
            self.task = spawn(self._flush())

    async def _flush(self) -> None:
        client = redis_client()
        while self.pending:
            batch, self.pending = self.pending, []
            pipe = client.pipeline(transaction=False)
            for position, frame, final in batch:
                pipe.xadd(self.key, {"f": frame, "e": b"1" if final else b""}, id=f"0-{position}")
            final = batch[-1][2]
            # Bounded while running too: a worker that dies leaves nothing for ever.
            ttl = settings.CHAT_RESUME_TTL_SECONDS
            if not final:
                ttl += settings.CHAT_STALE_TURN_SECONDS
            pipe.expire(self.key, ttl)
            try:
                await pipe.execute()
            except Exception:  # readers elsewhere will see the turn interrupted
                logger.warning("could not write turn log %s to Redis", self.key, exc_info=True)


async def alive_refresh(keys: list[str]) -> None:
    """Say that this worker still produces `keys` (one pipeline for all of them)."""
    if not keys or not settings.REDIS_URL:
        return
    pipe = redis_client().pipeline(transaction=False)
    for key in keys:
        pipe.set(_redis_key(key, "alive"), b"1", ex=ALIVE_SECONDS)
    await pipe.execute()


async def alive_forget(key: str) -> None:
    if settings.REDIS_URL:
        await redis_client().delete(_redis_key(key, "alive"))


async def watched_elsewhere(keys: list[str]) -> set[str]:
    """Which of `keys` a reader on another worker has followed in the last seconds."""
    if not keys or not settings.REDIS_URL:
        return set()
    values = await redis_client().mget([_redis_key(key, "watched") for key in keys])
    return {key for key, value in zip(keys, values, strict=True) if value}


async def log_remote(key: str, *, interrupted: Any) -> TurnLog | None:
    """A local copy of a log another worker produces (or produced), or None if Redis has
    no trace of it. `interrupted(log)` is awaited once if its producer stops answering."""
    if not settings.REDIS_URL:
        return None
    tail = _tails.get(key)
    if tail is not None:
        return tail
    client = redis_client()
    exists, alive = (
        await client.exists(_redis_key(key)),
        await client.exists(_redis_key(key, "alive")),
    )
    if not exists and not alive:
        return None
    tail = _tails[key] = TurnLog(key)
    spawn(_tail(tail, interrupted))
    return tail


async def _tail(log: TurnLog, interrupted: Any) -> None:
    client = redis_client()
    stream, alive, watched = (_redis_key(log.key, kind) for kind in ("log", "alive", "watched"))
    misses = idle = 0
    try:
        while not log.closed:
            if log.readers:
                idle = 0
                await client.set(watched, b"1", ex=ALIVE_SECONDS)
            else:
                idle += 1
                if idle > 2:  # its readers have gone: a new one starts a new tail
                    return
            last = f"0-{len(log.frames)}"
            answer = await client.xread({stream: last}, block=POLL_MS, count=1000)
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    position = int(entry_id.split(b"-")[1])
                    if position != len(log.frames) + 1:
                        continue  # never out of order; a duplicate is skipped
                    frame = fields[b"f"]
                    log.add_frame(frame, _event_of(frame))
            if answer:
                misses = 0
                continue
            misses = 0 if await client.exists(alive) else misses + 1
            if misses >= MISSES_BEFORE_INTERRUPTED:
                await interrupted(log)
                return
    finally:
        with contextlib.suppress(KeyError):
            if _tails[log.key] is log:
                del _tails[log.key]


def _event_of(frame: bytes) -> StreamEvent:
    """The event a stored frame encodes (`id: n\\nevent: x\\ndata: {...}\\n\\n`)."""
    _, event_line, data_line, *_ = frame.decode().split("\n")
    return StreamEvent(event_line[len("event: ") :], json.loads(data_line[len("data: ") :]))


def log_text(log: TurnLog) -> str:
    return "".join(event.data.get("text", "") for event in log.events if event.type == "delta")
