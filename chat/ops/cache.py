"""The cache with `REDIS_URL`: Redis, or while Redis cannot be reached, this worker's own
memory. Chat goes on in that degraded mode (rate limits, quotas and stream caps count
per worker, Stop reaches the worker it was asked on, a reply resumes on its own worker),
logged once when it starts and once when Redis answers again; `/readyz` says so
(`cache_degraded`). While degraded Redis is tried again every `RETRY_SECONDS`, so it
recovers by itself."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("chat")
RETRY_SECONDS = 5.0
OUTAGES = (RedisConnectionError, RedisTimeoutError)


class ResilientRedisCache(RedisCache):
    """Django's `RedisCache`, falling back to a `LocMemCache` while Redis is down."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        local = {k: v for k, v in params.items() if k in ("TIMEOUT", "KEY_PREFIX", "VERSION")}
        self._memory = LocMemCache(f"chat-degraded-{id(self)}", local)
        self._retry_at = 0.0  # while degraded: when to try Redis again (else 0)

    @property
    def degraded(self) -> bool:
        return self._retry_at > 0

    def in_memory_now(self) -> bool:
        """Whether operations go to this worker's memory now (degraded, not yet time to
        try Redis again)."""
        return bool(self._retry_at) and time.monotonic() < self._retry_at

    def outage(self, exc: BaseException) -> None:
        """Redis failed: degraded from now. Also for a failure seen by another client of
        the same Redis (the counters' own), so both fall back together."""
        if not self._retry_at:
            logger.error(
                "Redis unreachable (%s): degraded mode, this worker's own cache: limits "
                "count per worker, Stop and resume work within a worker",
                type(exc).__name__,
            )
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _either(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.in_memory_now():
            return getattr(self._memory, name)(*args, **kwargs)
        try:
            result = getattr(RedisCache, name)(self, *args, **kwargs)
        except OUTAGES as exc:
            self.outage(exc)
            return getattr(self._memory, name)(*args, **kwargs)
        if self._retry_at:
            self._retry_at = 0.0
            logger.warning("Redis reachable again: degraded mode over")
        return result


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
