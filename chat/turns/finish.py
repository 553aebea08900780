"""Recording a turn's outcome, usage and cost: once per turn, in a group-committed
transaction (`chat.turns.batching`) shared by the turns that end together."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from chat import llm
from chat.llm import Finished, ProviderError, Usage
from chat.models import Message
from chat.ops import metrics
from chat.spend.ledger import ledger_record
from chat.spend.prices import cost_of, price_now
from chat.streams import EndData
from chat.text import storable
from chat.turns.batching import Batcher
from chat.turns.selectors import end_event_data, stored_end_data
from chat.turns.start import Turn

logger = logging.getLogger("chat")
Status = Message.Status


def release_connection() -> None:
    """Close this thread's database connection unless a transaction holds it. Streams wait
    on the upstream for long: with the connection closed meanwhile, open streams do not
    each hold a connection (CONN_MAX_AGE=0 alone closes it only when the response ends).
    SQLite's are kept: a file handle, no server slot, and reopening one costs more than
    the rest of a turn's database work."""
    if connection.vendor != "sqlite" and not connection.in_atomic_block:
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
) -> EndData:
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
        usage = llm.estimate_usage(prompt=prompt, reply=text)
        if turn.attached:  # the files' share, guessed: still flagged as an estimate
            files = llm.files_estimate(turn.context)
            usage = replace(
                usage,
                input_tokens=usage.input_tokens + files,
                total_tokens=usage.total_tokens + files,
            )
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
                f.turn.message_id for f, (_, ok) in zip(finishes, results, strict=True) if ok
            ]
            ledger_record(written)
            return [data for data, _ in results]
    finally:
        release_connection()


def _finish(finish: _Finish, now: datetime) -> tuple[EndData, bool]:
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
        return stored_end_data(Message.objects.get(pk=finish.turn.message_id)), False
    data = end_event_data(
        status=finish.status,
        finish_reason=fields["finish_reason"],
        usage=usage.as_dict() if usage else None,
        usage_estimated=usage.estimated if usage else False,
        cost=cost,
        ttft_ms=finish.ttft_ms,
        duration_ms=finish.duration_ms,
        error=error.detail() if error else None,
        retry_after=error.retry_after if error else None,
    )
    return data, True


_finishes: Batcher[_Finish, EndData] = Batcher(_turns_finish)


def ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
