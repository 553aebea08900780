"""Atomic counters in Django's cache, shared by every worker when the cache is Redis.

Only atomic operations are used: `add` creates a counter with its expiry if missing,
`incr`/`decr` change it (INCRBY/DECRBY in Redis). They are called through `sync_to_async`
on purpose (or inline, for the in-process LocMem cache): Django's `BaseCache.aincr` is a
get-then-set, not atomic, and `RedisCache` does not override it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

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
