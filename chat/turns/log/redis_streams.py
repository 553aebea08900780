"""Turn logs in Redis, with `REDIS_URL`: the producer appends each frame to a Redis Stream
(entry id `0-<position>`), and a reader on another worker follows it through one task per
turn and worker that tails the stream into a local copy all its readers there share.

The frames queued while a write is under way go in one pipelined round trip, so a burst
of frames costs one write, never one per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings

from chat.ops.cache import OUTAGES
from chat.runtime import PerLoop, spawn
from chat.streams import decode_sse
from chat.turns.log.memory import copies

if TYPE_CHECKING:
    from chat.turns.log import TurnLog

logger = logging.getLogger("chat")
# A producer refreshes its liveness key at each tick (`chat.turns.detached`); readers
# elsewhere give it up after the key has been missing on this many polls in a row.
ALIVE_SECONDS = 5
MISSES_BEFORE_INTERRUPTED = 3
POLL_MS = 1000
# Polls with no reader before a tail gives up (a new reader starts a new one).
POLLS_WITHOUT_READERS = 2


# Connections to Redis per worker, each pool bounded and blocking: past its cap a caller
# waits for a connection rather than opening another or failing. Short commands (frames
# written, liveness, leases) have their own pool, so tails, each holding a connection for
# a whole blocking XREAD, can never starve the producers. More tails than connections
# take turns: each XREAD gives its connection back when it returns (at the latest after
# one poll), so a tail waits at most a few polls. A wait past `REDIS_WAIT_SECONDS` means
# Redis is not answering, and is handled as an outage.
REDIS_CONNECTIONS = 32
TAIL_CONNECTIONS = 64
REDIS_WAIT_SECONDS = 30
# How this worker's connections are named in Redis's CLIENT LIST (with the process id).
CLIENT_NAME = "chat-turnlog"
TAIL_CLIENT_NAME = "chat-turnlog-tail"


def _pool_client(name: str, connections: int) -> Any:
    import redis.asyncio

    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.REDIS_URL,
        max_connections=connections,
        timeout=REDIS_WAIT_SECONDS,
        # An unreachable Redis fails fast (turn logs and leases then degrade), never hangs.
        socket_connect_timeout=1,
        client_name=f"{name}:{os.getpid()}",
    )
    return redis.asyncio.Redis(connection_pool=pool)


# One `redis.asyncio` client per event loop and pool (its connections belong to that loop).
_clients: PerLoop[Any] = PerLoop(lambda: _pool_client(CLIENT_NAME, REDIS_CONNECTIONS))
_tail_clients: PerLoop[Any] = PerLoop(lambda: _pool_client(TAIL_CLIENT_NAME, TAIL_CONNECTIONS))


def redis_client() -> Any:
    return _clients.get()


def _redis_key(key: str, kind: str) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "") or "chatsite"
    return f"{prefix}:{key}:{kind}"


class Publisher:
    """Appends a log's frames to its Redis Stream, all that queued up in one pipeline."""

    def __init__(self, key: str) -> None:
        self.key = _redis_key(key, "log")
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


async def worker_lease_renew(worker: str, seconds: float) -> None:
    """Say that `worker` is alive, and so are the turns it produces (`chat.turns.lease`)."""
    await redis_client().set(
        _redis_key(f"chat:worker:{worker}", "lease"), b"1", px=int(seconds * 1000)
    )


async def workers_alive(workers: list[str]) -> set[str]:
    """Which of `workers` renewed their lease in the last `CHAT_LEASE_SECONDS`."""
    if not workers:
        return set()
    keys = [_redis_key(f"chat:worker:{worker}", "lease") for worker in workers]
    values = await redis_client().mget(keys)
    return {worker for worker, value in zip(workers, values, strict=True) if value}


async def log_text_remote(key: str) -> str:
    """The text of a turn's deltas as far as they reached its log in Redis ("" if none)."""
    entries = await redis_client().xrange(_redis_key(key, "log"))
    events = (decode_sse(fields[b"f"]) for _, fields in entries)
    return "".join(event.data.get("text", "") for event in events if event.type == "delta")


async def log_exists(key: str) -> bool:
    """Whether Redis has a trace of `key`'s log: its frames, or a worker producing it."""
    return bool(await redis_client().exists(_redis_key(key, "log"), _redis_key(key, "alive")))


def tail_start(log: TurnLog, *, interrupted: Callable[[TurnLog], Awaitable[None]]) -> TurnLog:
    """Keep `log`, a local copy, up to date with its Redis Stream while it has readers;
    `interrupted(log)` is awaited once if its producer stops answering."""
    copies.add(log)
    spawn(_tail(log, interrupted))
    return log


async def _tail(log: TurnLog, interrupted: Callable[[TurnLog], Awaitable[None]]) -> None:
    client, reads = redis_client(), _tail_clients.get()
    stream, alive, watched = (_redis_key(log.key, kind) for kind in ("log", "alive", "watched"))
    misses = idle = 0
    try:
        while not log.closed:
            if log.readers:
                idle = 0
                with contextlib.suppress(*OUTAGES):
                    await client.set(watched, b"1", ex=ALIVE_SECONDS)
            else:
                idle += 1
                if idle > POLLS_WITHOUT_READERS:
                    return
            last = f"0-{len(log.frames)}"
            try:
                answer = await reads.xread({stream: last}, block=POLL_MS, count=1000)
            except OUTAGES:
                # Redis restarting: its readers wait (pings go on) and the tail goes on
                # once it is back; a lost log ends as an interrupted one does, from the row.
                await asyncio.sleep(POLL_MS / 1000)
                continue
            before = len(log.frames)
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    position = int(entry_id.split(b"-")[1])
                    if position != len(log.frames) + 1:
                        continue  # never out of order; a duplicate is skipped
                    frame = fields[b"f"]
                    log.add_frame(frame, decode_sse(frame))
            if len(log.frames) > before:
                misses = 0
                continue
            if answer:
                # Only frames past a gap (Redis restarted empty mid-reply, the frames
                # between lost): no use reading them again at once. The reader waits
                # for the producer as if nothing came, and gets the row's end after it.
                await asyncio.sleep(POLL_MS / 1000)
            try:
                misses = 0 if await client.exists(alive) else misses + 1
            except OUTAGES:
                continue
            if misses >= MISSES_BEFORE_INTERRUPTED:
                await interrupted(log)
                return
    finally:
        copies.discard(log)
