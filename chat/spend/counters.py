"""Atomic counters in Django's cache, shared by every worker when the cache is Redis.

Only atomic operations are used: `add` creates a counter with its expiry if missing,
`incr`/`decr` change it (INCRBY/DECRBY in Redis). They are called through `sync_to_async`
on purpose (or inline, for the in-process LocMem cache): Django's `BaseCache.aincr` is a
get-then-set, not atomic, and `RedisCache` does not override it.

A turn's own counters (`Counters`: its rate, quota and stream slot) go to Redis together,
in one MULTI/EXEC round trip on the event loop's own asyncio client, under the keys and
in the format Django's cache uses (so `cache.get` reads them): through Django's cache
they were seven round trips and a thread hop to admit a turn, two and a hop to settle it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from chat.ops.cache import OUTAGES, ResilientRedisCache
from chat.runtime import PerLoop

P = ParamSpec("P")
T = TypeVar("T")

IN_PROCESS_CACHES = (LocMemCache, DummyCache)


def cache_is_shared() -> bool:
    """Whether other worker processes see this cache (Redis), or it lives in this one."""
    return not isinstance(caches[DEFAULT_CACHE_ALIAS], IN_PROCESS_CACHES)


async def run_cache_ops(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a group of counter operations: inline when the cache lives in this process
    (LocMem: a dict behind a lock, no I/O), else in one thread hop for the whole group (a
    hop costs more than a Redis round trip), so each caller crosses once."""
    if not cache_is_shared():
        return fn(*args, **kwargs)
    return await sync_to_async(fn, thread_sensitive=False)(*args, **kwargs)


def count(key: str, *, timeout: int, delta: int = 1) -> int:
    """Atomically add `delta` to a counter that expires `timeout` seconds after creation."""
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key, delta)
    except ValueError:  # expired between add and incr: start a fresh window
        cache.add(key, 0, timeout=timeout)
        return cache.incr(key, delta)


Op = Literal["count", "read", "release", "touch"]
# Connections to Redis per worker for the counters, and how long a round trip may wait
# for one of them: a connection is held until the event loop reads its reply, which in a
# burst on a saturated worker takes as long as the loop's backlog, so the wait is long.
REDIS_CONNECTIONS = 128
REDIS_WAIT_SECONDS = 120
CLIENT_NAME = "chat-counters"  # in Redis's CLIENT LIST, with the process id
# Decrement a counter that still exists (one that expired stays gone), atomically.
_RELEASE = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end"


def _connect() -> Any:
    import redis.asyncio

    location = settings.CACHES[DEFAULT_CACHE_ALIAS]["LOCATION"]
    # Django's RedisCache writes to the first of its servers.
    first = location[0] if isinstance(location, list | tuple) else location.replace(";", ",")
    # Blocking: a burst of turns waits for one of these connections rather than failing
    # when more are asked for at once.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        str(first).split(",")[0],
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_WAIT_SECONDS,
        client_name=f"{CLIENT_NAME}:{os.getpid()}",
    )
    return redis.asyncio.Redis(connection_pool=pool)


# One `redis.asyncio` client per event loop (its connections belong to that loop).
_clients: PerLoop[Any] = PerLoop(_connect)


@dataclass
class Counters:
    """Counter operations sent together: `count`, `read`, `release` and `touch` queue
    one each and return where its value will be in what `run()` returns."""

    ops: list[tuple[Op, str, tuple[int, ...]]] = field(default_factory=list)

    def count(self, key: str, *, timeout: int, delta: int = 1) -> int:
        """As `count()`: the counter after adding `delta`."""
        return self._queue("count", key, delta, timeout)

    def read(self, key: str) -> int:
        """The counter now (0 when there is none)."""
        return self._queue("read", key)

    def release(self, key: str) -> int:
        """Take one off a counter that exists (an expired one stays gone)."""
        return self._queue("release", key)

    def touch(self, key: str, *, timeout: int) -> int:
        return self._queue("touch", key, timeout)

    def _queue(self, op: Op, key: str, *args: int) -> int:
        self.ops.append((op, key, args))
        return len(self.ops) - 1

    async def run(self) -> list[int]:
        """Apply them, in order: in one round trip to Redis, inline in-process."""
        if not self.ops:
            return []
        shared = caches[DEFAULT_CACHE_ALIAS]
        degraded = isinstance(shared, ResilientRedisCache) and shared.in_memory_now()
        if not cache_is_shared() or degraded:
            return [self._local(op, key, *args) for op, key, args in self.ops]
        try:
            return await self._redis()
        except OUTAGES as exc:
            if not isinstance(shared, ResilientRedisCache):
                raise
            # Redis went away: the cache falls back with us (the ops above go to this
            # worker's memory now), so a turn is admitted in degraded mode, not refused.
            shared.outage(exc)
            return [self._local(op, key, *args) for op, key, args in self.ops]

    @staticmethod
    def _local(op: Op, key: str, *args: int) -> int:
        if op == "count":
            delta, timeout = args
            return count(key, timeout=timeout, delta=delta)
        if op == "touch":
            return int(cache.touch(key, args[0]))
        if op == "release":
            try:
                return cache.decr(key)
            except ValueError:  # expired: nothing to give back
                return 0
        return int(cache.get(key, 0))

    async def _redis(self) -> list[int]:
        pipe = _clients.get().pipeline(transaction=True)
        at: list[int] = []  # each op's reply in the pipeline's
        for op, key, args in self.ops:
            full = cache.make_key(key)
            if op == "count":
                delta, timeout = args
                pipe.set(full, 0, ex=timeout, nx=True)
                pipe.incrby(full, delta)
            elif op == "touch":
                pipe.expire(full, args[0])
            elif op == "release":
                pipe.eval(_RELEASE, 1, full)
            else:
                pipe.get(full)
            at.append(len(pipe.command_stack) - 1)
        replies = await pipe.execute()
        return [int(replies[index] or 0) for index in at]
