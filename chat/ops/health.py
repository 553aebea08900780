"""Readiness checks for /readyz: can this worker reach its database and its cache?"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger("chat")

# A check that has not answered by then counts as failed: a probe must not hang.
CHECK_TIMEOUT_SECONDS = 3.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def database() -> None:
    await sync_to_async(_database)()


class Degraded(Exception):
    """Working, though not as configured (Redis down: this worker's own cache)."""


async def cache_round_trip() -> None:
    # Per process and random: workers probing at once cannot read each other's value.
    key, value = f"chat:readyz:{os.getpid()}", secrets.token_hex(8)
    await cache.aset(key, value, timeout=30)
    if await cache.aget(key) != value:
        raise RuntimeError("the cache did not return what was just stored")
    if getattr(cache, "degraded", False):  # chat.ops.cache: Redis is down
        raise Degraded("Redis unreachable: this worker's own cache")


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": database,
    "cache": cache_round_trip,
}


async def _outcome(name: str, check: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.warning("readiness check %s timed out", name)
        return "timeout"
    except Degraded:
        return "degraded"
    except Exception as exc:
        # The detail (which may name hosts or users) goes to the log, not to the prober.
        logger.warning("readiness check %s failed: %s", name, exc)
        return f"failed: {type(exc).__name__}"
    return "ok"


async def readiness() -> dict[str, str]:
    """Every check's outcome by name: "ok", "degraded" (working, but not as configured),
    "timeout" or "failed: <exception class>"."""
    names = list(CHECKS)
    outcomes = await asyncio.gather(*(_outcome(name, CHECKS[name]) for name in names))
    return dict(zip(names, outcomes, strict=True))
