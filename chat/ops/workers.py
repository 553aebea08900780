"""How many worker processes share this deployment, and whether they can: without Redis
each worker has its own cache, so Stop asked on one is never seen by another, rate
limits and stream caps count per worker (so let N times too many through), and a reply
resumes only on its own worker. Several workers therefore need `REDIS_URL`: a system
check says so, and a worker refuses to start without it.

The number is `WEB_CONCURRENCY`, which uvicorn also takes as its `--workers` default
(`make serve-prod` and the systemd unit set it rather than the flag, so both agree)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

UNSHARED = (
    "{n} workers (WEB_CONCURRENCY) without REDIS_URL: each would keep its own stop "
    "requests, rate limits, stream caps and turn logs, so Stop on one would not reach "
    "another and limits would let {n} times too much through. Set REDIS_URL, or run one "
    "worker (WEB_CONCURRENCY=1)."
)


def workers_configured() -> int:
    try:
        return max(1, int(os.environ.get("WEB_CONCURRENCY") or 1))
    except ValueError:
        return 1


def workers_unshared() -> str | None:
    """Why this deployment's workers cannot share their state, or None if they can."""
    workers = workers_configured()
    if workers > 1 and not settings.REDIS_URL:
        return UNSHARED.format(n=workers)
    return None


def workers_check(**kwargs: Any) -> list[checks.CheckMessage]:
    """`manage.py check`: several workers without Redis."""
    problem = workers_unshared()
    return [checks.Warning(problem, id="chat.W201")] if problem else []


def workers_refuse_unshared() -> None:
    """At a worker's start: refuse to serve rather than silently split state."""
    problem = workers_unshared()
    if problem:
        raise ImproperlyConfigured(problem)
