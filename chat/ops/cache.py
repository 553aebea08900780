"""The cache with `REDIS_URL`: Redis, or while Redis cannot be reached, this worker's own
memory. Chat goes on in that degraded mode (rate limits, quotas and stream caps count
per worker, Stop reaches the worker it was asked on, a reply resumes on its own worker),
logged once when it starts and once when Redis answers again; `/readyz` says so
(`cache_degraded`). While degraded Redis is tried again every `RETRY_SECONDS`, so it
recovers by itself.

Django makes a cache object per request context (`caches` is context-local), and
`RedisCache` a connection pool per cache object: each request opened a Redis connection of
its own, closed only when the garbage collector reached its pool, so a busy worker held
however many the collector had not yet found. Here every cache object of a process shares
one pool per server (`chat.seams`, seam 6), bounded (`CACHE_CONNECTIONS`) and blocking: a
thread waits for a connection rather than opening another. A connection is held for one
command, bounded by the socket timeout, so a wait past `CACHE_WAIT_SECONDS` means Redis is
not answering, and is handled as an outage."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat.seams import SharedPoolClient

logger = logging.getLogger("chat")
RETRY_SECONDS = 5.0
OUTAGES = (RedisConnectionError, RedisTimeoutError)
# Connections to Redis per worker process for Django's cache, used from the threads that
# `sync_to_async` runs it in.
CACHE_CONNECTIONS = 32
CACHE_WAIT_SECONDS = 10
CLIENT_NAME = "chat-cache"  # in Redis's CLIENT LIST, with the process id


class ResilientRedisCache(RedisCache):
    """Django's `RedisCache`, falling back to a `LocMemCache` while Redis is down."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = {
            "pool_class": "redis.BlockingConnectionPool",
            "max_connections": CACHE_CONNECTIONS,
            "timeout": CACHE_WAIT_SECONDS,
            "client_name": f"{CLIENT_NAME}:{os.getpid()}",
            **(params.get("OPTIONS") or {}),
        }
        super().__init__(server, {**params, "OPTIONS": options})
        self._class = SharedPoolClient
        local = {k: v for k, v in params.items() if k in ("TIMEOUT", "KEY_PREFIX", "VERSION")}
        self._fallback = _fallback_for(server, local)

    @property
    def _memory(self) -> LocMemCache:
        return self._fallback.memory

    @property
    def degraded(self) -> bool:
        return self._fallback.retry_at > 0

    def in_memory_now(self) -> bool:
        """Whether operations go to this worker's memory now (degraded, not yet time to
        try Redis again)."""
        retry_at = self._fallback.retry_at
        return bool(retry_at) and time.monotonic() < retry_at

    def outage(self, exc: BaseException) -> None:
        """Redis failed: degraded from now. Also for a failure seen by another client of
        the same Redis (the counters' own), so both fall back together."""
        if not self._fallback.retry_at:
            logger.error(
                "Redis unreachable (%s): degraded mode, this worker's own cache: limits "
                "count per worker, Stop and resume work within a worker",
                type(exc).__name__,
            )
        self._fallback.retry_at = time.monotonic() + RETRY_SECONDS

    def _either(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.in_memory_now():
            return getattr(self._memory, name)(*args, **kwargs)
        try:
            result = getattr(RedisCache, name)(self, *args, **kwargs)
        except OUTAGES as exc:
            self.outage(exc)
            return getattr(self._memory, name)(*args, **kwargs)
        if self._fallback.retry_at:
            self._fallback.retry_at = 0.0
            logger.warning("Redis reachable again: degraded mode over")
        return result


@dataclass
class _Fallback:
    memory: LocMemCache
    retry_at: float = 0.0  # while degraded: when to try Redis again (else 0)


# The degraded mode's memory and state, one per Redis location and key format in this
# process: Django makes a cache object per request context, and each of them falls back
# to, counts in and recovers the same worker's memory. (A `LocMemCache` per cache object
# was a store per request, so limits did not count across requests while degraded, and
# each one stayed in Django's module-level registry of local-memory caches for good.)
_fallbacks: dict[tuple[str, str], _Fallback] = {}


def _fallback_for(server: str, local: dict[str, Any]) -> _Fallback:
    key = (server, repr(sorted(local.items())))
    found = _fallbacks.get(key)
    if found is None:
        # Two threads making the first at once get the same store: `LocMemCache`s of one
        # name share it.
        memory = LocMemCache(f"chat-degraded-{key!r}", local)
        found = _fallbacks.setdefault(key, _Fallback(memory))
    return found


def _delegated(name: str) -> Any:
    def method(self: ResilientRedisCache, *args: Any, **kwargs: Any) -> Any:
        return self._either(name, *args, **kwargs)

    method.__name__ = name
    return method


# Every operation `RedisCache` implements itself; the rest of `BaseCache` is built on them.
for _name in (
    "add",
    "get",
    "set",
    "touch",
    "delete",
    "get_many",
    "has_key",
    "incr",
    "set_many",
    "delete_many",
    "clear",
):
    setattr(ResilientRedisCache, _name, _delegated(_name))
