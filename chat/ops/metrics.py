"""Prometheus metrics for operators, served at /metrics (`chat.ops.views`).

Turns are counted once, when `chat.turns.finish.turn_finish` has recorded them, from the same
outcome that was stored (so the counters add up to what the admin shows); nothing is
counted per token.

Two modes, chosen by prometheus_client itself when it is first imported:

- `PROMETHEUS_MULTIPROC_DIR` set (`make serve-prod`, the systemd unit): each uvicorn
  worker writes its values to memory-mapped files in that directory and a scrape, on any
  worker, sums them all, so `--workers N` reports one set of numbers. The directory must
  exist, and be emptied before the workers start (old files would be added in again).
- Unset (`make run`, tests, one process): the ordinary in-process registry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, ParamSpec

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

logger = logging.getLogger("chat")
P = ParamSpec("P")
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
TOKEN_KINDS = ("input", "output", "cached", "reasoning")
# From a local model's first token to a long reasoning model's reply.
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 40, 60, 120, 300)

turns = Counter("chat_turns", "Assistant turns recorded, by final status.", ["model", "status"])
tokens = Counter("chat_tokens", "Tokens recorded for finished turns.", ["model", "kind"])
cost_usd = Counter("chat_cost_usd", "Cost of finished turns as stored, in USD.", ["model"])
time_to_first_token = Histogram(
    "chat_time_to_first_token_seconds",
    "From calling the model to its first text.",
    ["model"],
    buckets=TTFT_BUCKETS,
)
turn_duration = Histogram(
    "chat_turn_duration_seconds",
    "From calling the model to the turn's end.",
    ["model"],
    buckets=DURATION_BUCKETS,
)
# livesum: the workers' gauges are added up, and a worker that exits stops counting.
streams_open = Gauge(
    "chat_streams_open", "SSE and NDJSON response bodies being sent.", multiprocess_mode="livesum"
)
# Per worker (a `pid` label in multi-process mode): what a soak run watches for leaks.
event_loop_tasks = Gauge(
    "chat_event_loop_tasks",
    "asyncio tasks alive on the worker's event loop, sampled every few seconds.",
    multiprocess_mode="liveall",
)
upstream_errors = Counter("chat_upstream_errors", "Turns the upstream failed, by type.", ["type"])
limit_refusals = Counter(
    "chat_limit_refusals", "Requests refused with 429 by our own limits.", ["type"]
)


def never_fails(count: Callable[P, None]) -> Callable[P, None]:
    """Counting must never fail what is counted (a turn already recorded, a refusal):
    a broken metrics directory costs the numbers, not the reply."""

    @functools.wraps(count)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            logger.exception("could not update metrics (%s)", count.__name__)

    return guarded


@never_fails
def turn_recorded(*, model: str, outcome: Mapping[str, Any]) -> None:
    """Count a finished turn from its `end`/`error` event data (what was stored)."""
    turns.labels(model=model, status=outcome["status"]).inc()
    usage = outcome.get("usage")
    if usage:
        for kind in TOKEN_KINDS:
            if value := usage.get(f"{kind}_tokens"):
                tokens.labels(model=model, kind=kind).inc(value)
    if outcome.get("cost") is not None:
        cost_usd.labels(model=model).inc(float(Decimal(outcome["cost"])))
    if outcome.get("ttft_ms") is not None:
        time_to_first_token.labels(model=model).observe(outcome["ttft_ms"] / 1000)
    if outcome.get("duration_ms") is not None:
        turn_duration.labels(model=model).observe(outcome["duration_ms"] / 1000)
    error = outcome.get("error")
    if error and error["type"].startswith("upstream"):
        upstream_errors.labels(type=error["type"]).inc()


# How often each worker samples its own state (`worker_sample`, a lifespan hook).
SAMPLE_SECONDS = 5.0


async def worker_sample() -> None:
    """Record this worker's own state for the next scrape: its tasks, the sampling one
    included. In multi-process mode a scrape reads every worker's files, so each worker
    writes its values itself."""
    event_loop_tasks.set(len(asyncio.all_tasks()))


@never_fails
def limit_refused(type: str) -> None:
    limit_refusals.labels(type=type).inc()


@asynccontextmanager
async def stream_open() -> AsyncIterator[None]:
    """Around a streamed body: counts it in `chat_streams_open` while it runs."""
    streams_open.inc()
    try:
        yield
    finally:
        streams_open.dec()


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets, and its content type. In multi-process mode this reads
    every worker's files (file I/O: call it off the event loop)."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        # prometheus_client is typed, but not its multiprocess module.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited() -> None:
    """At a worker's clean shutdown: its live gauges stop counting towards the sum."""
    if MULTIPROCESS:
        # prometheus_client is typed, but not its multiprocess module.
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
