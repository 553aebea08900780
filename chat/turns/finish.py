"""Recording a turn's outcome, usage and cost: once per turn, in a group-committed
transaction (`chat.turns.batching`) shared by the turns that end together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from chat import llm
from chat.errors import error_detail
from chat.llm import Finished, ProviderError, Usage
from chat.models import Message, ModelPrice
from chat.ops import metrics
from chat.spend.ledger import ledger_record
from chat.spend.prices import cost_of, price_now, search_cost
from chat.spend.tool_calls import tool_calls_priced, tool_calls_record
from chat.streams import EndData
from chat.text import storable
from chat.turns.batching import Batcher
from chat.turns.rounds import UpstreamIdle
from chat.turns.selectors import end_event_data, stored_end_data
from chat.turns.start import Turn, start_writes

logger = logging.getLogger("chat")
Status = Message.Status
INTERRUPTED = "The server writing this reply stopped before it was finished."


def keeps_connection() -> bool:
    """Whether the database is SQLite (whose connection `release_connection` keeps), from
    its settings: `connection.vendor` read on the event loop makes a connection object for
    the request's context (asgiref keeps Django's connections per context there), which
    ends as a reference cycle for the garbage collector, once per turn."""
    return bool(settings.DATABASES[DEFAULT_DB_ALIAS]["ENGINE"] == "django.db.backends.sqlite3")


def release_connection() -> None:
    """Close this thread's database connection unless a transaction holds it. Streams wait
    on the upstream for long: with the connection closed meanwhile, open streams do not
    each hold a connection (CONN_MAX_AGE=0 alone closes it only when the response ends).
    SQLite's are kept: a file handle, no server slot, and reopening one costs more than
    the rest of a turn's database work."""
    if not keeps_connection() and not connection.in_atomic_block:
        connection.close()


async def turn_finish(
    *,
    turn: Turn,
    text: str,
    finished: Finished | None,
    error: ProviderError | None,
    stopped: bool,
    ttft_ms: int | None,
    duration_ms: int,
    parts: Sequence[dict[str, Any]] = (),
    rounds: Sequence[Finished] = (),
    unfinished_round_text: str | None = None,
    interrupted: bool = False,
) -> EndData:
    """Record the outcome, usage and cost of a turn; returns the `end`/`error` event data.
    `rounds` are its model calls that finished (each with usage); `finished` is the last,
    with their sum, when the turn ended well. A turn cut short still counts the calls
    that finished, and an estimate for the one under way when it wrote text.
    `interrupted`: stopped by this server's shutdown, not by anyone who asked: kept as
    `incomplete` with error `interrupted`, as a turn whose worker died is."""
    if interrupted:
        status = Status.INCOMPLETE
    elif error is not None:
        status = Status.FAILED
    elif finished is not None:
        status = Status(finished.status)
    else:
        status = Status.CANCELLED if stopped else Status.FAILED
    usage = finished.usage if finished is not None else None
    partial = text if unfinished_round_text is None else unfinished_round_text
    if usage is None:
        counted = [r.usage for r in rounds if r.usage is not None]
        # An upstream that went silent was sent the prompt: billed even with no text.
        billed = bool(partial) or isinstance(error, UpstreamIdle)
        if billed or (status == Status.COMPLETED and not rounds):
            counted.append(usage_estimate(turn, partial))
        usage = sum(counted[1:], counted[0]) if counted else None
    result = await _recorded(
        _Finish(
            turn=turn,
            text=text,
            status=status,
            usage=usage,
            finished=finished,
            error=error,
            ttft_ms=ttft_ms,
            duration_ms=duration_ms,
            parts=list(parts),
            rounds=list(rounds),
            interrupted=interrupted,
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


def usage_estimate(turn: Turn, reply: str) -> Usage:
    """A model call's usage guessed from its prompt and `reply`, flagged as an estimate;
    attached files count a share each (the text alone would miss an image's cost)."""
    prompt = turn.system + "".join(str(m.get("content") or "") for m in turn.context)
    estimate = llm.estimate_usage(prompt=prompt, reply=reply)
    if not turn.attached:
        return estimate
    files = llm.files_estimate(turn.context)
    return replace(
        estimate,
        input_tokens=estimate.input_tokens + files,
        total_tokens=estimate.total_tokens + files,
    )


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
    parts: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[Finished] = field(default_factory=list)
    interrupted: bool = False


def _turns_finish(finishes: list[_Finish]) -> list[EndData | Exception]:
    """One transaction for a batch of finished turns (turns that end together, e.g. a
    burst's, are recorded together); returns each one's `end`/`error` event data. Only
    message rows and usage ledger rows are written (a conversation's `updated_at` is its
    last turn's start), the ledger's in one fixed order, so a batch never waits for a row
    held by another batch that waits for one of its own."""
    now = timezone.now()
    try:
        with transaction.atomic():
            results = [_finish(f, now) for f in finishes]
            # Counted in the same transaction as the rows: only the ones written here.
            written = [
                f.turn.message_id
                for f, (_, rounds) in zip(finishes, results, strict=True)
                if rounds is not None
            ]
            ledger_record(written)
            tool_calls_record(finished_at=now, replies=[rounds for _, rounds in results if rounds])
            return [data for data, _ in results]
    finally:
        release_connection()


def _finish(finish: _Finish, now: datetime) -> tuple[EndData, list[dict[str, Any]] | None]:
    """Write one turn's row; its event data, and its stored rounds (None when it had been
    recorded already)."""
    usage, finished, error = finish.usage, finish.finished, finish.error
    rich = any(part["type"] != "text" for part in finish.parts)
    price = price_now(finish.turn.model, now) if usage is not None else None
    cost = cost_of(usage, price) if usage is not None and price is not None else None
    # Hosted web search is billed per call, beside the tokens (the demo's is pretend);
    # so is each tool call that has a price.
    priced_searches = finish.turn.provider != "demo"
    searches = sum(r.web_searches for r in finish.rounds)
    if searches and priced_searches:
        cost = (cost or Decimal(0)) + search_cost(searches, now)
    calls, tools_cost = tool_calls_priced(finish.parts, at=now) if rich else ([], Decimal(0))
    if tools_cost:
        cost = (cost or Decimal(0)) + tools_cost
    rounds = [
        _round(r, price, priced_searches, now, calls[i] if i < len(calls) else [])
        for i, r in enumerate(finish.rounds)
    ]
    detail = error.detail() if error else None
    if finish.interrupted:
        detail = error_detail("interrupted", INTERRUPTED)
    fields: dict[str, Any] = {
        "content": storable(finish.text),
        "status": finish.status,
        "finish_reason": "interrupted"
        if finish.interrupted
        else (finished.finish_reason if finished else ""),
        "response_id": finished.response_id if finished else "",
        "ttft_ms": finish.ttft_ms,
        "duration_ms": finish.duration_ms,
        "cost": cost,
        "finished_at": now,
        "error_type": detail["type"] if detail else "",
        "error_message": storable(detail["message"]) if detail else "",
        # Text only and one model call: `content` and the row's usage say it all.
        "parts": finish.parts if rich else None,
        "rounds": rounds if rich or len(rounds) > 1 else None,
    }
    if usage is not None:
        fields.update(usage.as_dict(), usage_estimated=usage.estimated)
    # Only an unfinished row is written: a turn is recorded exactly once.
    written = Message.objects.filter(
        pk=finish.turn.message_id, status__in=[Status.PENDING, Status.STREAMING]
    ).update(**fields)
    if not written:  # recorded already (by whoever finished it first): say what is stored
        return stored_end_data(Message.objects.get(pk=finish.turn.message_id)), None
    data = end_event_data(
        status=finish.status,
        finish_reason=fields["finish_reason"],
        usage=usage.as_dict() if usage else None,
        usage_estimated=usage.estimated if usage else False,
        cost=cost,
        ttft_ms=finish.ttft_ms,
        duration_ms=finish.duration_ms,
        error=detail,
        retry_after=error.retry_after if error else None,
    )
    return data, fields["rounds"] or []


def _round(
    finished: Finished,
    price: ModelPrice | None,
    priced_searches: bool,
    now: datetime,
    tool_calls: list[dict[str, Any]],
) -> dict[str, Any]:
    """One model call of the turn as stored: what it used and cost, and its ids; the
    tool calls it asked for, each with its price (not in `cost`: that is the call's own)."""
    usage = finished.usage
    cost = cost_of(usage, price) if usage is not None and price is not None else None
    searched: dict[str, Any] = {}
    if finished.web_searches and priced_searches:
        searches_cost = search_cost(finished.web_searches, now)
        cost = (cost or Decimal(0)) + searches_cost
        searched["web_searches_cost"] = f"{searches_cost:f}"
    if tool_calls:
        searched["tool_calls"] = tool_calls
    return {
        "response_id": finished.response_id,
        "request_id": finished.request_id,
        "finish_reason": finished.finish_reason,
        "usage": usage.as_dict() if usage else None,
        "usage_estimated": usage.estimated if usage else False,
        "web_searches": finished.web_searches,
        "cost": None if cost is None else f"{cost:f}",
        **searched,
    }


# Turns waiting to begin go first: their time to first token waits on the start's write,
# while a finish only delays the `end` event of a reply already streamed.
_finishes: Batcher[_Finish, EndData] = Batcher(_turns_finish, yields_to=start_writes)
# Waits between attempts to record a turn while the database cannot be reached (restarted,
# failing over); after the last, the row is left to the lease sweep.
FINISH_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


async def _recorded(finish: _Finish) -> EndData:
    """`finish` written, retried with backoff while the database cannot be reached. Never
    recorded twice: the write updates only a row still unfinished and counts it in the
    ledger in the same transaction, so after an attempt that did commit, a later one
    writes nothing and reads back what is stored."""
    for delay in FINISH_RETRY_DELAYS:
        try:
            return await _finishes.submit(finish)
        except (OperationalError, InterfaceError):
            logger.warning(
                "could not record turn %s (database unreachable); retrying",
                finish.turn.message_id,
                exc_info=True,
            )
            await asyncio.sleep(delay)
    return await _finishes.submit(finish)


def ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
