"""The lifecycle of a chat turn. Views and commands call these and nothing else writes rows.

    turn = await turn_start(owner=..., message="hi")      # rows exist before the upstream call
    async for event in turn_stream(turn=turn): ...       # start, delta…, end | error
                                                          # the row is finished in a shielded
                                                          # `finally`, whatever happens

Database work is O(1) per turn: one transaction to start, one to claim (deferred turns),
one to finish; turns that start or finish at the same moment share their start or finish
transaction (`chat.batching`). Nothing touches the database per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from chat import metrics, provider, relay
from chat.batching import Batcher
from chat.errors import ChatError, not_found
from chat.models import Conversation, Message
from chat.pricing import cost_of, price_now
from chat.provider import Finished, ProviderError, TextDelta, Usage
from chat.streams import StreamEvent

logger = logging.getLogger("chat")
T = TypeVar("T")

Status = Message.Status
PING = StreamEvent("ping")


def stream_url(message_id: int) -> str:
    """Where a deferred turn is streamed (`EventSource`)."""
    return reverse("chat:message-stream", args=[message_id])


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a conversation belongs to: a user, or an anonymous visitor's random key."""

    user_id: int | None = None
    anonymous_key: str = ""

    def __post_init__(self) -> None:
        if (self.user_id is None) == (not self.anonymous_key):
            raise ValueError("An owner is either a user or an anonymous key, never both.")

    def conversations(self) -> Any:
        """The owner's conversations; one they deleted is gone for them (not for reports)."""
        if self.user_id is not None:
            mine = Conversation.objects.filter(owner_id=self.user_id)
        else:
            mine = Conversation.objects.filter(owner__isnull=True, anonymous_key=self.anonymous_key)
        return mine.filter(deleted_at__isnull=True)

    def owns(self, conversation: Conversation) -> bool:
        """What `conversations()` selects, for one row already loaded."""
        if conversation.deleted_at is not None:
            return False
        if self.user_id is not None:
            return conversation.owner_id == self.user_id
        return conversation.owner_id is None and conversation.anonymous_key == self.anonymous_key

    def messages(self) -> Any:
        if self.user_id is not None:
            mine = Message.objects.filter(conversation__owner_id=self.user_id)
        else:
            mine = Message.objects.filter(
                conversation__owner__isnull=True, conversation__anonymous_key=self.anonymous_key
            )
        return mine.filter(conversation__deleted_at__isnull=True)


@dataclass(slots=True)
class Turn:
    """One assistant reply being produced, and everything needed to produce it."""

    conversation_id: uuid.UUID
    message_id: int
    model: str
    api: provider.Api
    provider: str
    system: str
    context: list[dict[str, str]] = field(default_factory=list)


def choose_model(requested: str | None, conversation_model: str = "") -> str:
    allowed = provider.backend().models
    model = requested or conversation_model or provider.backend().default_model
    if model not in allowed:
        if requested:
            raise ChatError(
                400,
                "invalid_model",
                f"Model {requested!r} is not allowed here; choose one of {', '.join(allowed)}.",
            )
        model = provider.backend().default_model  # the allow-list changed since
    return model


def choose_api(requested: str | None) -> provider.Api:
    api = requested or provider.backend().api
    if api not in provider.APIS:
        raise ChatError(400, "invalid_api", "api must be 'responses' or 'chat'.")
    return api  # type: ignore[return-value]


async def turn_start(
    *,
    owner: Owner,
    message: str,
    conversation_id: uuid.UUID | None = None,
    model: str | None = None,
    system: str | None = None,
    api: str | None = None,
    defer: bool = False,
) -> Turn:
    """Store the user's message and the assistant row (`pending` when deferred, else
    already claimed as `streaming`) before any upstream call. Turns started at the same
    moment are written together, in one transaction (`chat.batching`)."""
    start = _Start(
        owner=owner,
        message=message,
        conversation_id=conversation_id,
        model=model,
        system=system,
        api=choose_api(api),
        defer=defer,
    )
    return await _committed(_starts.submit(start), undo=lambda turn: _abandon(turn.message_id))


async def _committed(work: Awaitable[T], *, undo: Callable[[T], Awaitable[Any]]) -> T:
    """Await database `work` whose thread cannot be interrupted. If our caller is cancelled
    meanwhile (the client left), the work still commits: wait for it, `undo` it so no row
    is left claimed with nobody to finish it, then let the cancellation go on."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await undo(await task)
        raise


async def _abandon(message_id: int) -> None:
    """A turn whose client left before it started: cancelled, never sent to the model."""
    await Message.objects.filter(
        pk=message_id, status__in=[Status.PENDING, Status.STREAMING]
    ).aupdate(status=Status.CANCELLED, finished_at=timezone.now())


@dataclass(frozen=True, slots=True)
class _Start:
    owner: Owner
    message: str
    conversation_id: uuid.UUID | None
    model: str | None
    system: str | None
    api: provider.Api
    defer: bool


def _turns_start(starts: list[_Start]) -> list[Turn | Exception]:
    """One transaction for a batch of turn starts: new conversations and all messages in
    bulk INSERTs (as many rows per statement as the database takes). A start that is
    refused (unknown conversation, model not allowed) gets its `ChatError` and writes
    nothing; the others go on."""
    backend = provider.backend()
    with transaction.atomic():
        locked = _lock_conversations(starts)
        plans = [_plan(start, locked) for start in starts]
        Conversation.objects.bulk_create(
            plan.conversation for plan in plans if isinstance(plan, _Plan) and plan.is_new
        )
        rows: list[Message] = []
        for plan in plans:
            if isinstance(plan, _Plan):
                rows += _messages(plan, backend.name)
        # Their ids come back from the INSERT (RETURNING), in order.
        Message.objects.bulk_create(rows)
        assistants = iter(rows[1::2])
        return [
            _turn(plan, next(assistants), backend.name) if isinstance(plan, _Plan) else plan
            for plan in plans
        ]


@dataclass(slots=True)
class _Plan:
    start: _Start
    conversation: Conversation
    model: str
    is_new: bool


def _lock_conversations(starts: list[_Start]) -> dict[uuid.UUID, Conversation]:
    """The batch's existing conversations, row-locked (PostgreSQL) in one query: the lock
    serialises turns of one conversation across workers, and taking all of a batch's
    locks in primary-key order means two workers' batches never wait on each other in a
    cycle."""
    ids = {start.conversation_id for start in starts if start.conversation_id is not None}
    if not ids:
        return {}
    rows = Conversation.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    return {conversation.pk: conversation for conversation in rows}


def _plan(start: _Start, locked: dict[uuid.UUID, Conversation]) -> _Plan | ChatError:
    try:
        if start.conversation_id is None:
            chosen = choose_model(start.model)
            conversation = Conversation(
                owner_id=start.owner.user_id,
                anonymous_key=start.owner.anonymous_key,
                title=_title_from(start.message),
                model=chosen,
                system_prompt=start.system or "",
            )
            return _Plan(start, conversation, chosen, is_new=True)
        found = locked.get(start.conversation_id)
        if found is None or not start.owner.owns(found):
            raise not_found("conversation")
        chosen = choose_model(start.model, found.model)
    except ChatError as exc:
        return exc
    changes = {"updated_at": timezone.now(), "model": chosen}
    if start.system is not None:
        changes["system_prompt"] = start.system
    Conversation.objects.filter(pk=found.pk).update(**changes)
    found.system_prompt = changes.get("system_prompt", found.system_prompt)
    return _Plan(start, found, chosen, is_new=False)


def _messages(plan: _Plan, provider_name: str) -> list[Message]:
    start = plan.start
    return [
        Message(
            conversation=plan.conversation,
            role=Message.Role.USER,
            content=start.message,
            model=plan.model,
        ),
        Message(
            conversation=plan.conversation,
            role=Message.Role.ASSISTANT,
            status=Status.PENDING if start.defer else Status.STREAMING,
            claimed_at=None if start.defer else timezone.now(),
            provider=provider_name,
            api=start.api,
            model=plan.model,
        ),
    ]


def _turn(plan: _Plan, assistant: Message, provider_name: str) -> Turn:
    start = plan.start
    turn = Turn(
        conversation_id=plan.conversation.pk,
        message_id=assistant.pk,
        model=plan.model,
        api=start.api,
        provider=provider_name,
        system=plan.conversation.system_prompt,
    )
    if not start.defer:  # a deferred turn's context is read when it is claimed
        turn.context = (
            [{"role": "user", "content": start.message}][: settings.CHAT_MAX_CONTEXT_MESSAGES]
            # A new conversation's context is the message just stored: no query.
            if plan.is_new
            else _context(plan.conversation.pk, before=assistant.pk)
        )
    return turn


_starts: Batcher[_Start, Turn] = Batcher(_turns_start)


def _title_from(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 80 else line[:79] + "…"


def _context(conversation_id: uuid.UUID, *, before: int) -> list[dict[str, str]]:
    """Earlier messages sent to the model, oldest first, capped to the newest N."""
    rows = (
        Message.objects.filter(conversation_id=conversation_id, pk__lt=before)
        .exclude(role=Message.Role.ASSISTANT, content="")
        .exclude(status__in=[Status.PENDING, Status.STREAMING])
        .order_by("-pk")
        .values_list("role", "content")[: settings.CHAT_MAX_CONTEXT_MESSAGES]
    )
    return [{"role": role, "content": content} for role, content in reversed(rows)]


async def turn_claim(*, owner: Owner, message_id: int) -> Turn | Message:
    """Claim a deferred turn (`pending → streaming`) atomically.

    Returns the `Turn` to stream when this caller won the claim; otherwise the stored
    `Message` (finished, or streaming for someone else). Only a won claim ever reaches
    the model, so a reconnecting browser can never cause a second call or bill.
    """
    message = (
        await owner.messages()
        .select_related("conversation")
        .filter(pk=message_id, role=Message.Role.ASSISTANT)
        .afirst()
    )
    if message is None:
        raise not_found("message")
    if message.status == Status.PENDING:
        turn = await _committed(_claim(message), undo=_abandon_claim)
        if turn is not None:
            return turn
        await message.arefresh_from_db()
    return message


async def _claim(message: Message) -> Turn | None:
    won = await Message.objects.filter(pk=message.pk, status=Status.PENDING).aupdate(
        status=Status.STREAMING, claimed_at=timezone.now()
    )
    if not won:
        return None
    context = await sync_to_async(_context)(message.conversation_id, before=message.pk)
    return Turn(
        conversation_id=message.conversation_id,
        message_id=message.pk,
        model=message.model,
        api=message.api,  # type: ignore[arg-type]
        provider=message.provider,
        system=message.conversation.system_prompt,
        context=context,
    )


async def _abandon_claim(turn: Turn | None) -> None:
    if turn is not None:
        await _abandon(turn.message_id)


_background: set[asyncio.Future[None]] = set()  # referenced until done (asyncio keeps weak refs)


def release_connection() -> None:
    """Close this thread's database connection unless a transaction holds it. Streams wait
    on the upstream for long: with the connection closed meanwhile, a thousand open
    streams do not hold a thousand connections (CONN_MAX_AGE=0 alone closes it only when
    the response ends). SQLite's are kept: a file handle, no server slot, and reopening
    one costs more than the rest of a turn's database work."""
    if connection.vendor != "sqlite" and not connection.in_atomic_block:
        connection.close()


async def turn_stream(*, turn: Turn) -> AsyncIterator[StreamEvent]:
    """Call the model and yield `start`, `delta`…, then `end` or `error`.

    The row is finished exactly once, in a shielded `finally`, for every outcome:
    completed, upstream error, timeout, stop request, or the consumer going away.
    """
    started = time.monotonic()
    parts: list[str] = []
    ttft_ms: int | None = None
    finished: Finished | None = None
    error: ProviderError | None = None
    stopped = False
    outcome: dict[str, Any] | None = None
    stop_key = cancel_key(turn.conversation_id, turn.message_id)
    _in_flight.add(stop_key)
    try:
        # Inside the `try`: a consumer that leaves at this very first event still gets
        # the row finished.
        yield StreamEvent(
            "start",
            {
                "conversation": str(turn.conversation_id),
                "message": turn.message_id,
                "model": turn.model,
            },
        )
        # Resumed once the response has started, so the rows are written (turn_start or
        # claim, and a session the middleware saved): seconds to minutes of waiting on
        # the model follow, so give the database connection back rather than pin it. Not
        # awaited, so the upstream call does not wait for it; it runs in this request's
        # DB thread, before turn_finish's write queued behind it there.
        if connection.vendor != "sqlite":
            release = asyncio.ensure_future(sync_to_async(release_connection)())
            _background.add(release)
            release.add_done_callback(_background.discard)
        upstream = provider.stream_reply(
            messages=turn.context, model=turn.model, api=turn.api, system=turn.system
        )
        relayed = relay.relay(
            upstream,
            cancel_key=stop_key,
            ping_every=settings.CHAT_SSE_PING_SECONDS,
        )
        # aclosing: when our consumer closes us at a `yield`, the upstream is closed
        # before the row is finished, not whenever the garbage collector gets to it.
        async with aclosing(relayed):
            async for event in relayed:
                if isinstance(event, TextDelta):
                    if not event.text:
                        continue
                    if ttft_ms is None:
                        ttft_ms = _ms_since(started)
                    parts.append(event.text)
                    yield StreamEvent("delta", {"text": event.text})
                elif isinstance(event, Finished):
                    finished = event
                else:
                    yield PING
    except ProviderError as exc:
        error = exc
    except relay.StopRequested:
        stopped = True
    except Exception:
        # A bug or an upstream that breaks the protocol in a way we did not foresee: the
        # turn failed (not "cancelled") and the client gets a final error event.
        logger.exception("turn %s failed unexpectedly", turn.message_id)
        error = ProviderError("upstream", "The model's reply could not be read.")
    finally:
        # Shielded: the client may be gone, but the row must still be finished.
        try:
            outcome = await shielded(
                turn_finish(
                    turn=turn,
                    text="".join(parts),
                    finished=finished,
                    error=error,
                    stopped=stopped or (finished is None and error is None),
                    ttft_ms=ttft_ms,
                    duration_ms=_ms_since(started),
                )
            )
        finally:
            _in_flight.discard(stop_key)
    if error is not None:
        yield StreamEvent("error", outcome)
    else:
        yield StreamEvent("end", outcome)


# Turns being streamed by this process, so shutdown can wait until each row is finished.
_in_flight: set[str] = set()  # the stop keys of the turns this process streams


async def turns_drain(*, timeout: float) -> int:
    """Stop every turn this process is still streaming and wait (up to `timeout` s) until
    each is recorded (`cancelled`, partial text kept); returns how many are left. For
    server shutdown, after the server's own grace period: uvicorn cancels only its own
    task, not the one Django streams in, so without this the event loop would close
    under a running stream and leave its row `streaming`."""
    for stop_key in list(_in_flight):
        relay.request_stop(stop_key)
    deadline = time.monotonic() + timeout
    while _in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return len(_in_flight)


async def shielded(coro: Awaitable[T]) -> T:
    """Await `coro` to the end even if our caller is cancelled meanwhile (the work goes on
    in its own task; the caller still sees the cancellation)."""
    task = asyncio.ensure_future(coro)
    return await asyncio.shield(task)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def turn_finish(
    *,
    turn: Turn,
    text: str,
    finished: Finished | None,
    error: ProviderError | None,
    stopped: bool,
    ttft_ms: int | None,
    duration_ms: int,
) -> dict[str, Any]:
    """Record the outcome, usage and cost of a turn; returns the `end`/`error` event data."""
    if error is not None:
        status = Status.FAILED
    elif finished is not None:
        status = Status(finished.status)
    else:
        status = Status.CANCELLED if stopped else Status.FAILED
    usage = finished.usage if finished is not None else None
    if usage is None and (text or status == Status.COMPLETED):
        prompt = turn.system + "".join(m["content"] for m in turn.context)
        usage = provider.estimate_usage(prompt=prompt, reply=text)
    result = await _finishes.submit(
        _Finish(
            turn=turn,
            text=text,
            status=status,
            usage=usage,
            finished=finished,
            error=error,
            ttft_ms=ttft_ms,
            duration_ms=duration_ms,
        )
    )
    upstream_request_id = (finished.request_id if finished else "") or (
        error.request_id if error else ""
    )
    logger.info(
        "turn finished message=%s status=%s model=%s api=%s in=%s out=%s ttft_ms=%s "
        "duration_ms=%s request_id=%s",
        turn.message_id,
        status,
        turn.model,
        turn.api,
        usage.input_tokens if usage else None,
        usage.output_tokens if usage else None,
        ttft_ms,
        duration_ms,
        upstream_request_id,
        extra={
            "message_id": turn.message_id,
            "status": str(status),
            "model": turn.model,
            "api": turn.api,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "ttft_ms": ttft_ms,
            "duration_ms": duration_ms,
            "upstream_request_id": upstream_request_id,
        },
    )
    # From `result`, what was stored: the counters add up to the rows.
    metrics.turn_recorded(model=turn.model, outcome=result)
    return result


@dataclass(frozen=True, slots=True)
class _Finish:
    turn: Turn
    text: str
    status: Status
    usage: Usage | None
    finished: Finished | None
    error: ProviderError | None
    ttft_ms: int | None
    duration_ms: int


def _turns_finish(finishes: list[_Finish]) -> list[dict[str, Any] | Exception]:
    """One transaction for a batch of finished turns (turns that end together, e.g. a
    burst's, are recorded together); returns each one's `end`/`error` event data. Only
    message rows are written (a conversation's `updated_at` is its last turn's start),
    so a batch locks no row another batch could be waiting for in turn."""
    now = timezone.now()
    try:
        with transaction.atomic():
            return [_finish(f, now) for f in finishes]
    finally:
        release_connection()


def _finish(finish: _Finish, now: datetime) -> dict[str, Any]:
    usage, finished, error = finish.usage, finish.finished, finish.error
    price = price_now(finish.turn.model, now) if usage is not None else None
    cost = cost_of(usage, price) if usage is not None and price is not None else None
    fields: dict[str, Any] = {
        "content": storable(finish.text),
        "status": finish.status,
        "finish_reason": finished.finish_reason if finished else "",
        "response_id": finished.response_id if finished else "",
        "ttft_ms": finish.ttft_ms,
        "duration_ms": finish.duration_ms,
        "cost": cost,
        "finished_at": now,
        "error_type": error.error_type if error else "",
        "error_message": storable(error.message) if error else "",
    }
    if usage is not None:
        fields.update(usage.as_dict(), usage_estimated=usage.estimated)
    # Only an unfinished row is written: a turn is recorded exactly once.
    written = Message.objects.filter(
        pk=finish.turn.message_id, status__in=[Status.PENDING, Status.STREAMING]
    ).update(**fields)
    if not written:  # recorded already (by whoever finished it first): say what is stored
        return turn_replay(Message.objects.get(pk=finish.turn.message_id))[-1].data
    return end_event_data(
        status=finish.status,
        finish_reason=fields["finish_reason"],
        usage=usage.as_dict() if usage else None,
        usage_estimated=usage.estimated if usage else False,
        cost=cost,
        ttft_ms=finish.ttft_ms,
        duration_ms=finish.duration_ms,
        error=error and {"type": error.error_type, "message": error.message},
        retry_after=error.retry_after if error else None,
    )


_finishes: Batcher[_Finish, dict[str, Any]] = Batcher(_turns_finish)


def storable(text: str) -> str:
    """`text` as every database stores it: JSON can carry NUL, which PostgreSQL refuses
    in text, and lone surrogates like "\\ud800", which are not UTF-8 at all; they become
    U+FFFD. Model replies are mended so (refusing the row would leave the turn
    unrecorded); requests carrying them are refused (`payloads`)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def end_event_data(
    *,
    status: str,
    finish_reason: str,
    usage: dict[str, int] | None,
    usage_estimated: bool,
    cost: Any,
    ttft_ms: int | None,
    duration_ms: int | None,
    error: dict[str, str] | None = None,
    retry_after: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": str(status),
        "finish_reason": finish_reason,
        "usage": usage,
        "usage_estimated": usage_estimated,
        "cost": None if cost is None else f"{cost:f}",
        "ttft_ms": ttft_ms,
        "duration_ms": duration_ms,
    }
    if error:
        data["error"] = error
        if retry_after:
            data["retry_after"] = retry_after
    return data


def message_usage(message: Message) -> dict[str, int] | None:
    if message.input_tokens is None:
        return None
    return {
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens or 0,
        "total_tokens": message.total_tokens or 0,
        "cached_tokens": message.cached_tokens or 0,
        "reasoning_tokens": message.reasoning_tokens or 0,
    }


def turn_replay(message: Message) -> list[StreamEvent]:
    """The events of a finished turn, rebuilt from its stored row (no model call)."""
    events = [
        StreamEvent(
            "start",
            {
                "conversation": str(message.conversation_id),
                "message": message.pk,
                "model": message.model,
            },
        )
    ]
    if message.content:
        events.append(StreamEvent("delta", {"text": message.content}))
    data = end_event_data(
        status=message.status,
        finish_reason=message.finish_reason,
        usage=message_usage(message),
        usage_estimated=message.usage_estimated,
        cost=message.cost,
        ttft_ms=message.ttft_ms,
        duration_ms=message.duration_ms,
        error={"type": message.error_type, "message": message.error_message}
        if message.status == Status.FAILED
        else None,
    )
    events.append(StreamEvent("error" if message.status == Status.FAILED else "end", data))
    return events


async def turn_follow(*, message: Message) -> AsyncIterator[StreamEvent]:
    """For a second reader of a turn: wait for the stored result, never call the model."""
    deadline = time.monotonic() + settings.CHAT_STREAM_WAIT_SECONDS
    last_ping = time.monotonic()
    while message.status not in Message.FINAL_STATUSES:
        if time.monotonic() >= deadline:
            yield StreamEvent(
                "error",
                {
                    "status": str(message.status),
                    "error": {
                        "type": "still_streaming",
                        "message": "This reply is still being written elsewhere; "
                        "reload to see it when it is done.",
                    },
                },
            )
            return
        await asyncio.sleep(0.5)
        if time.monotonic() - last_ping >= settings.CHAT_SSE_PING_SECONDS:
            last_ping = time.monotonic()
            yield PING
        await message.arefresh_from_db()
    for event in turn_replay(message):
        yield event


def cancel_key(conversation_id: uuid.UUID, message_id: int) -> str:
    """The cache key that asks whichever worker streams this turn to stop. The random
    conversation id makes it unique to this database: a message id alone comes round
    again when a database is recreated (tests, a reset dev setup) while the cache keeps
    a stop asked for its namesake, which would stop a new turn at its first token."""
    return f"chat:cancel:{conversation_id}:{message_id}"


async def turn_cancel(*, owner: Owner, message_id: int) -> Message:
    """Ask the worker streaming this turn to stop (works across workers via the cache).
    A turn nobody has claimed yet is cancelled on the spot."""
    message = await owner.messages().filter(pk=message_id, role=Message.Role.ASSISTANT).afirst()
    if message is None:
        raise not_found("message")
    cancelled_unclaimed = message.status == Status.PENDING and bool(
        await Message.objects.filter(pk=message.pk, status=Status.PENDING).aupdate(
            status=Status.CANCELLED, finished_at=timezone.now()
        )
    )
    if not cancelled_unclaimed:
        # Streaming, or claimed between our read and our update: stop whoever streams it.
        await message.arefresh_from_db()
        if message.status == Status.STREAMING:
            stop_key = cancel_key(message.conversation_id, message.pk)
            await cache.aset(stop_key, True, timeout=600)
            relay.request_stop(stop_key)
    await message.arefresh_from_db()
    return message


def turns_expire_stale(*, older_than: timedelta) -> int:
    """Mark turns whose worker died as `incomplete`, keeping whatever they hold: streaming
    for longer than `older_than` since they were claimed (a turn that waited long as
    `pending` and was claimed just now is live), or never opened for that long. Returns
    how many. Idempotent, so every worker may run it at start-up."""
    now = timezone.now()
    cutoff = now - older_than
    claimed_long_ago = Q(status=Status.STREAMING) & (
        Q(claimed_at__lt=cutoff) | Q(claimed_at__isnull=True, created_at__lt=cutoff)
    )
    never_opened = Q(status=Status.PENDING, created_at__lt=cutoff)
    expired = Message.objects.filter(claimed_long_ago | never_opened).update(
        status=Status.INCOMPLETE,
        finish_reason="stale",
        error_type="stale",
        error_message="The server stopped before this reply was finished.",
        finished_at=now,
    )
    # Run at start-up, outside any request: nothing else would ever close this connection.
    release_connection()
    return expired


async def conversation_list(*, owner: Owner, limit: int = 100) -> list[dict[str, Any]]:
    rows = owner.conversations().order_by("-updated_at")[:limit]
    return [
        {
            "id": str(c.id),
            "title": c.title,
            "model": c.model,
            "created_at": c.created_at.isoformat(),
            "updated_at": c.updated_at.isoformat(),
        }
        async for c in rows
    ]


async def conversation_detail(*, owner: Owner, conversation_id: uuid.UUID) -> dict[str, Any]:
    conversation = await owner.conversations().filter(pk=conversation_id).afirst()
    if conversation is None:
        raise not_found("conversation")
    messages = [
        {
            "id": m.pk,
            "role": m.role,
            "content": m.content,
            "status": m.status,
            "model": m.model,
            "finish_reason": m.finish_reason,
            "usage": message_usage(m),
            "usage_estimated": m.usage_estimated,
            "cost": None if m.cost is None else f"{m.cost:f}",
            "ttft_ms": m.ttft_ms,
            "duration_ms": m.duration_ms,
            "error": {"type": m.error_type, "message": m.error_message} if m.error_type else None,
            "created_at": m.created_at.isoformat(),
            "stream_url": stream_url(m.pk) if m.status == Status.PENDING else None,
        }
        async for m in conversation.messages.order_by("pk")
    ]
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "system": conversation.system_prompt,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "messages": messages,
    }
