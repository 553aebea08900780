"""Per-owner limits that hold across workers: request rate, daily tokens, concurrent streams,
bytes uploaded per day.

Counters live in Django's cache (`chat.spend.counters`: Redis when `REDIS_URL` is set, so every
worker sees the same numbers). Money budgets are `chat.spend.budgets`, checked here too.

Who is counted: a user (session or API token) by id; an anonymous caller by client IP,
since dropping the identity cookie must not reset the limits.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

from chat.errors import ChatError, LimitExceeded
from chat.models import Message
from chat.runtime import shielded
from chat.spend.budgets import budget_check, budget_spent_changed
from chat.spend.counters import Counters, count, run_cache_ops

T = TypeVar("T")

UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")
# A stream slot whose worker died is forgotten after this long without new streams.
STREAM_SLOT_TTL = 15 * 60
STREAM_RETRY_AFTER = 5


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    seconds: int


def parse_rate(text: str) -> Rate | None:
    """`"20/min"`, `"100/hour"`, `"5/10s"`; empty or a zero count means no limit."""
    if not text or not text.strip():
        return None
    match = _RATE.match(text.lower())
    if match is None or match.group(3) not in UNIT_SECONDS:
        raise ValueError(f"Rate {text!r} is not like '20/min' or '100/hour'.")
    count, multiple, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
    if count == 0:
        return None
    return Rate(count=count, seconds=multiple * UNIT_SECONDS[unit])


def limits_key(request: HttpRequest, user_id: int | None) -> str:
    """Whom the limits count: a signed-in person (`user_id`) by id, anyone else by IP."""
    if user_id is not None:
        return f"user:{user_id}"
    return f"ip:{client_ip(request)}"


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or behind a proxy the last address it appended to
    `CHAT_CLIENT_IP_HEADER` (earlier entries are whatever the client claimed)."""
    header = settings.CHAT_CLIENT_IP_HEADER
    if header:
        forwarded = request.headers.get(header, "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR") or "unknown"


def _rate_hit(key: str) -> None:
    rate = parse_rate(settings.CHAT_RATE_LIMIT)
    if rate is None:
        return
    now = time.time()
    window = int(now // rate.seconds)
    used = count(_rate_key(key, window), timeout=rate.seconds + 1)
    if used > rate.count:
        raise _rate_refusal(rate, window, now)


def _rate_key(key: str, window: int) -> str:
    return f"chat:rate:{key}:{window}"


def _rate_refusal(rate: Rate, window: int, now: float) -> LimitExceeded:
    retry_after = math.ceil((window + 1) * rate.seconds - now)
    return LimitExceeded(
        "rate_limited",
        f"Too many requests: at most {settings.CHAT_RATE_LIMIT}. Try again in {retry_after} s.",
        retry_after=retry_after,
    )


async def rate_hit(key: str) -> None:
    """Count one request; refuse it when the owner is over `CHAT_RATE_LIMIT`."""
    await run_cache_ops(_rate_hit, key)


def _quota_key(key: str) -> str:
    return f"chat:quota:{key}:{timezone.localdate().isoformat()}"


def _seconds_to_midnight() -> int:
    now = timezone.localtime()
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return math.ceil((midnight - now).total_seconds())


def _quota_refusal(quota: int) -> LimitExceeded:
    return LimitExceeded(
        "quota_exceeded",
        f"Today's token quota ({quota}) is used up; it resets at midnight ({settings.TIME_ZONE}).",
        retry_after=_seconds_to_midnight(),
    )


def _uploads_key(key: str) -> str:
    return f"chat:uploads:{key}:{timezone.localdate().isoformat()}"


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _upload_take(key: str, size: int) -> None:
    counter, limit = _uploads_key(key), settings.CHAT_FILES_DAILY_BYTES
    total = count(counter, timeout=2 * 86400, delta=size)
    if total > limit:
        count(counter, timeout=2 * 86400, delta=-size)
        raise ChatError(
            "daily_upload_limit",
            f"You have uploaded {_megabytes(total - size)} today; the daily limit is "
            f"{_megabytes(limit)}. It resets at midnight ({settings.TIME_ZONE}).",
        )


async def upload_take(key: str, size: int) -> None:
    """Count an upload's bytes against today's `CHAT_FILES_DAILY_BYTES` (413 when it would
    go over, and then not counted). Counted like the other limits, an anonymous caller by
    address: a new cookie per upload does not reset it."""
    await run_cache_ops(_upload_take, key, size)


async def upload_return(key: str, size: int) -> None:
    """Give back an upload's bytes: it was refused after all, or was already stored."""
    await run_cache_ops(count, _uploads_key(key), timeout=2 * 86400, delta=-size)


def _streams_key(key: str) -> str:
    return f"chat:streams:{key}"


def _stream_refusal() -> LimitExceeded:
    limit = settings.CHAT_MAX_CONCURRENT_STREAMS
    return LimitExceeded(
        "too_many_streams",
        f"At most {limit} replies can be written at once; wait for one to finish.",
        retry_after=STREAM_RETRY_AFTER,
    )


def _stream_acquire(key: str) -> bool:
    limit = settings.CHAT_MAX_CONCURRENT_STREAMS
    if limit <= 0:
        return False
    slots = _streams_key(key)
    running = count(slots, timeout=STREAM_SLOT_TTL)
    if running > limit:
        _stream_release(key)
        raise _stream_refusal()
    # The TTL is only a safety net for a worker that died holding slots.
    cache.touch(slots, STREAM_SLOT_TTL)
    return True


async def stream_acquire(key: str) -> bool:
    """Take a stream slot or raise; True when a slot was taken (release it later)."""
    return await run_cache_ops(_stream_acquire, key)


def _stream_release(key: str) -> None:
    with contextlib.suppress(ValueError):  # expired by the safety net: nothing to give back
        cache.decr(_streams_key(key))


async def stream_release(key: str) -> None:
    counters = Counters()
    counters.release(_streams_key(key))
    await counters.run()


async def turn_admit(*, key: str, streaming: bool, new_turn: bool = True) -> bool:
    """Everything a turn must pass before any row is written (a new turn: rate and quota;
    a streaming one: a stream slot), in one go (`Counters`: one Redis round trip). Returns
    whether a slot was taken; a deferred turn takes it when its stream is opened."""
    counters = Counters()
    rate = parse_rate(settings.CHAT_RATE_LIMIT) if new_turn else None
    quota = settings.CHAT_DAILY_TOKEN_QUOTA if new_turn else 0
    limit = settings.CHAT_MAX_CONCURRENT_STREAMS
    now = time.time()
    window = int(now // rate.seconds) if rate else 0
    if rate:
        used = counters.count(_rate_key(key, window), timeout=rate.seconds + 1)
    if quota > 0:
        tokens = counters.read(_quota_key(key))
    slot = streaming and limit > 0
    if limit > 0:
        slots = _streams_key(key)
        running = counters.count(slots, timeout=STREAM_SLOT_TTL) if slot else counters.read(slots)
        if slot:  # the TTL is only a safety net for a worker that died holding slots
            counters.touch(slots, timeout=STREAM_SLOT_TTL)
    values = await counters.run()
    try:
        if rate and values[used] > rate.count:
            raise _rate_refusal(rate, window, now)
        if quota > 0 and values[tokens] >= quota:
            raise _quota_refusal(quota)
        if limit > 0 and (values[running] > limit if slot else values[running] >= limit):
            raise _stream_refusal()
    except LimitExceeded:
        if slot:
            await stream_release(key)
        raise
    return slot


@contextlib.asynccontextmanager
async def admitted(
    *,
    key: str,
    streaming: bool,
    new_turn: bool = True,
    user_id: int | None = None,
    opening: int | None = None,
) -> AsyncIterator[bool]:
    """`turn_admit` and the person's budget (for a new turn, or for `opening` a deferred
    one, which is when its model call is made), giving the stream slot back if the turn
    then fails to start."""
    if user_id is not None and (new_turn or opening is not None):
        await budget_check(user_id=user_id, opening=None if new_turn else opening)
    slot = await turn_admit(key=key, streaming=streaming, new_turn=new_turn)
    try:
        yield slot
    except BaseException:
        if slot:
            await stream_release(key)
        raise


async def guarded(
    events: AsyncIterator[T],
    *,
    key: str,
    message_id: int,
    slot: bool,
    user_id: int | None = None,
) -> AsyncGenerator[T, None]:
    """`events`, then (whatever ends them: end, error, disconnect) the stream slot is
    given back and the turn's recorded tokens and cost are counted against the daily
    quota and the person's budget. A detached turn is consumed by its producer task
    (`chat.turns.detached`), so this happens once, when the turn ends, however many
    readers come and go."""
    try:
        async for event in events:
            yield event
    finally:
        # Close the turn first, so its row is finished before its usage is read.
        aclose = getattr(events, "aclose", None)
        # Shielded: the client may be gone, but the slot and the counters must be settled.
        await shielded(_settle(aclose, key=key, message_id=message_id, slot=slot, user_id=user_id))


async def _settle(
    aclose: Callable[[], Awaitable[object]] | None,
    *,
    key: str,
    message_id: int,
    slot: bool,
    user_id: int | None,
) -> None:
    try:
        if aclose is not None:
            await aclose()
    finally:
        tokens = 0
        try:
            if settings.CHAT_DAILY_TOKEN_QUOTA > 0:
                tokens = (
                    await Message.objects.filter(pk=message_id)
                    .values_list("total_tokens", flat=True)
                    .afirst()
                ) or 0
        finally:  # the slot is given back even if the tokens could not be read
            counters = Counters()
            if slot:
                counters.release(_streams_key(key))
            if tokens > 0 and settings.CHAT_DAILY_TOKEN_QUOTA > 0:
                # Today's tokens, kept two days, then forgotten.
                counters.count(_quota_key(key), timeout=2 * 86400, delta=tokens)
            await counters.run()
            if user_id is not None:
                await run_cache_ops(budget_spent_changed, user_id)
